"""medzoo: a model zoo and training toolkit for medical image classification.

The Python API has the command line's names and overrides (see `medzoo.api`):

    import medzoo
    run = medzoo.train("demo", "trainer.max_epochs=1")
    model = medzoo.load("brain_tumor_resnet18_cpu")
    model.predict("scan.jpg")

Names are imported when first used, so `import medzoo` (and `medzoo --help`) stays fast.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "train": "medzoo.api", "evaluate": "medzoo.api", "load": "medzoo.api",
    "prepare": "medzoo.api", "bench": "medzoo.api",
    "Run": "medzoo.api", "AuditResult": "medzoo.api", "Predictor": "medzoo.api",
    "create_model": "medzoo.zoo", "list_models": "medzoo.zoo", "register_model": "medzoo.zoo",
}
__all__ = ["AuditResult", "Predictor", "Run", "__version__", "audit", "bench", "create_model", "evaluate", "list_models",
           "load", "prepare", "register_model", "train", "zoo"]

if TYPE_CHECKING:  # what static tools and editors see
    from medzoo import zoo
    from medzoo.api import AuditResult, Predictor, Run, bench, evaluate, load, prepare, train
    from medzoo.zoo import create_model, list_models, register_model


class _AuditPackage(ModuleType):
    """`medzoo.audit` is both the package of the dataset audit (medzoo/audit/) and the API's `medzoo.audit(root, ...)`:
    Python binds a subpackage to its parent's attribute whenever it is imported, which would hide a function of that
    name, so the package itself answers the call."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from medzoo.api import audit

        return audit(*args, **kwargs)


import_module("medzoo.audit").__class__ = _AuditPackage  # a docstring-only package: nothing heavy is imported


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name == "zoo":
        return import_module("medzoo.zoo")
    raise AttributeError(f"module 'medzoo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

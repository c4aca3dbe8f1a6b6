"""The model zoo: one file per model family, one registry, `create_model` as the front door.

Modules, bottom up: `card_schema` (a card's field limits and checks), `card_v1` (reading schema-1
cards), `card` (the typed model card) and `checkpoint` (the file format), `adapt` (channel and dimension
math), `external` (ResNet weights from torchvision, timm, MedicalNet), `registry` (names), `acs` (ACS
convolutions, used by the ResNet family), `hub` (where a published file or a Hub id's file lives), `catalog` (what is published, for people), `factory`
(create_model, model_from_checkpoint; it imports the model families, so that their entrypoints are registered
wherever a model is built), `export` (the front door to `export_onnx`, `export_torchscript` and
`export_bundle`, which builds on `export_bundle_preprocessing`; all share `export_common`). Nothing below
imports what stands above it.

The package imports its names when first used, so that reading the manifest (`medzoo.zoo.hub`, `medzoo zoo
list`) does not import torch and MONAI.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

# public name -> (module, name there)
_EXPORTS = {
    "create_model": ("medzoo.zoo.factory", "create_model"),
    "model_from_checkpoint": ("medzoo.zoo.factory", "model_from_checkpoint"),
    "info": ("medzoo.zoo.catalog", "info"),
    "list": ("medzoo.zoo.catalog", "published"),  # medzoo.zoo.list(), as `medzoo zoo list`
    "is_model": ("medzoo.zoo.registry", "is_model"),
    "list_models": ("medzoo.zoo.registry", "list_models"),
    "register_model": ("medzoo.zoo.registry", "register_model"),
}
__all__ = ["create_model", "info", "is_model", "list", "list_models", "model_from_checkpoint", "register_model"]

if TYPE_CHECKING:  # what static tools and editors see
    from medzoo.zoo.catalog import info
    from medzoo.zoo.catalog import published as list  # noqa: A004
    from medzoo.zoo.factory import create_model, model_from_checkpoint
    from medzoo.zoo.registry import is_model, list_models, register_model


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'medzoo.zoo' has no attribute {name!r}")
    import_module("medzoo.zoo.factory")  # the families: list_models() and is_model() answer with them registered
    module, attribute = _EXPORTS[name]
    value = getattr(import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

"""The model registry: `@register_model` entrypoints by name, `list_models`, `is_model` (building is factory.py's)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import TypeVar

import torch

from medzoo.close_names import unknown_name
from medzoo.errors import ConfigError

__all__ = ["entrypoint", "is_model", "list_models", "register_model"]

EntryPoint = Callable[..., torch.nn.Module]
F = TypeVar("F", bound=EntryPoint)

_model_entrypoints: dict[str, EntryPoint] = {}


def register_model(fn: F) -> F:
    """Register a model entrypoint under its function name and return it unchanged."""
    name = fn.__name__
    previous = _model_entrypoints.get(name)
    # Re-running the same definition (importlib.reload, notebooks) is harmless; two different
    # families claiming one name is a bug that would otherwise silently shadow a model.
    if previous is not None and (previous.__module__, previous.__qualname__) != (
        fn.__module__,
        fn.__qualname__,
    ):
        raise ConfigError(
            f"model '{name}' is registered twice: by {previous.__module__}.{previous.__qualname__} "
            f"and by {fn.__module__}.{fn.__qualname__}; rename one of the entrypoints."
        )
    _model_entrypoints[name] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Return the sorted names of registered models that match the shell-style `pattern`."""
    # fnmatchcase, not fnmatch: the answer must not depend on the operating system.
    return sorted(name for name in _model_entrypoints if fnmatch.fnmatchcase(name, pattern))


def is_model(name: str) -> bool:
    """Return True if `name` is a registered model."""
    return name in _model_entrypoints


def entrypoint(name: str) -> EntryPoint:
    """The entrypoint registered as `name`; an unknown name lists the closest ones."""
    if name not in _model_entrypoints:
        raise unknown_name("model", name, list_models())
    return _model_entrypoints[name]

"""The model registry: `@register_model` entrypoints, `create_model`, `list_models`, `is_model`."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from medzoo.naming import unknown_name

__all__ = ["create_model", "is_model", "list_models", "register_model"]

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
        raise ValueError(
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


def create_model(
    name: str,
    *,
    in_chans: int = 3,
    num_classes: int = 1000,
    spatial_dims: int = 2,
    pretrained: str | None = None,
    **kwargs: Any,
) -> torch.nn.Module:
    """Build the registered model `name`.

    Args:
        name: a name from `list_models()`, e.g. "resnet18".
        in_chans: input channels (any count, e.g. 1 for MRI, 64 for a slice stack).
        num_classes: outputs of the classifier; 0 gives a model that returns pooled features.
        spatial_dims: 2 for images, 3 for volumes.
        pretrained: a checkpoint tag or path (not wired yet).
        **kwargs: family-specific options, e.g. `stem` and `input_size` for ResNets.
    """
    if name not in _model_entrypoints:
        raise unknown_name("model", name, list_models())
    if pretrained is not None:
        raise NotImplementedError("pretrained weights: see medzoo.zoo.checkpoint")
    return _model_entrypoints[name](
        in_chans=in_chans, num_classes=num_classes, spatial_dims=spatial_dims, **kwargs
    )

"""The model registry: `@register_model` entrypoints, `create_model`, `list_models`, `is_model`."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from medzoo.errors import ConfigError
from medzoo.naming import unknown_name
from medzoo.zoo.adapt import load_pretrained, read_pretrained

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
    in_chans: int | None = None,
    num_classes: int | None = None,
    spatial_dims: int | None = None,
    pretrained: str | Path | None = None,
    depth_init: str = "centre",
    **kwargs: Any,
) -> torch.nn.Module:
    """Build the registered model `name`.

    Args:
        name: a name from `list_models()`, e.g. "resnet18".
        in_chans: input channels (any count, e.g. 1 for MRI, 64 for a slice stack).
        num_classes: outputs of the classifier; 0 gives a model that returns pooled features.
        spatial_dims: 2 for images, 3 for volumes.
            These three default to the checkpoint card's values with `pretrained`, else to 3, 1000 and 2.
        pretrained: path to a medzoo .safetensors checkpoint or a plain state dict (.pt/.pth, loaded with
            weights_only=True); other channel/class counts and 2D -> 3D are adapted (medzoo.zoo.adapt).
        depth_init: how 2D kernels become 3D ones when a 2D checkpoint feeds a 3D model: "centre" (the 2D
            kernel at the middle depth: a depth-constant volume gives exactly the 2D output) or "mean" (I3D).
        **kwargs: family-specific options, e.g. `stem` and `input_size` for ResNets; with `pretrained`
            they default to the card's `model_kwargs`.
    """
    if name not in _model_entrypoints:
        raise unknown_name("model", name, list_models())
    if pretrained is None:
        card: dict[str, Any] = {}
    else:
        state, card_or_none, path = read_pretrained(pretrained)
        card = card_or_none or {}
        if card.get("arch") not in (None, name):
            raise ConfigError(f"{path} holds a '{card['arch']}' checkpoint, not a '{name}': call "
                              f"create_model('{card['arch']}', pretrained=...) or pass a '{name}' checkpoint.")
        # The architecture options (e.g. the stem) belong to the weights; explicit arguments still win.
        kwargs = {**card.get("model_kwargs", {}), **kwargs}
    model = _model_entrypoints[name](
        in_chans=card.get("in_chans", 3) if in_chans is None else in_chans,
        num_classes=card.get("num_classes", 1000) if num_classes is None else num_classes,
        spatial_dims=card.get("spatial_dims", 2) if spatial_dims is None else spatial_dims,
        **kwargs,
    )
    if pretrained is not None:
        load_pretrained(model, state, card_or_none, source=str(path), depth_init=depth_init)
    return model

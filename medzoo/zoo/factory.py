"""The zoo's front door: `create_model` (with pretrained weights adapted) and `model_from_checkpoint`.

Imports run one way: this module uses the registry (names), the checkpoint file format, the card, the hub
(where a name's file lives), the reading of weights from outside the zoo and the adaptation math; none of them
imports it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from medzoo.errors import ConfigError, DataError, UnknownNameError
from medzoo.zoo import hub, resnet
from medzoo.zoo.adapt import load_pretrained
from medzoo.zoo.card import ModelCard
from medzoo.zoo.checkpoint import load_checkpoint, read_weights
from medzoo.zoo.external import ExternalWeights, recognise_resnet
from medzoo.zoo.registry import entrypoint, is_model, list_models

# The model families, each imported here by name so that its @register_model entrypoints are known wherever a
# model is built (medzoo.zoo imports this module before it answers list_models); a new family is one more name.
FAMILIES = (resnet,)

__all__ = ["create_model", "model_from_checkpoint", "read_pretrained"]

log = logging.getLogger(__name__)


def read_pretrained(ref: str | Path) -> tuple[dict[str, torch.Tensor], ModelCard | None, Path]:
    """Weights, card (None for a card-less file) and path of the checkpoint `ref` names (a path or a zoo
    name, see `hub.resolve`), never unpickling."""
    path = hub.resolve(ref)
    state, card = read_weights(path)
    return state, card, path


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
            These three default to the checkpoint's values with `pretrained` (its card's, or what a card-less
            file's tensors show), else to 3, 1000 and 2.
        pretrained: a zoo name, a path to a medzoo .safetensors checkpoint or to a card-less ResNet state dict
            (.safetensors, or .pt/.pth/.bin loaded with weights_only=True) in torchvision's, timm's or MedicalNet's
            names, or a Hub model id `hf-hub:OWNER/REPO[@REVISION]` (e.g. hf-hub:timm/resnet18.a1_in1k); other
            channel/class counts and 2D -> 3D are adapted (medzoo.zoo.adapt).
        depth_init: how 2D kernels become 3D ones when a 2D checkpoint feeds a 3D model: "centre" (the 2D
            kernel at the middle depth: a depth-constant volume gives exactly the 2D output) or "mean" (I3D).
        **kwargs: family-specific options, e.g. `stem`, `input_size` and `conv="acs"` (2D kernels on volumes, so
            2D weights serve a 3D model unchanged) for ResNets; with `pretrained` they default to the card's
            `model_kwargs`, or to what a card-less file's tensors fix (stem, width, shortcut).
    """
    build = entrypoint(name)
    described: ModelCard | ExternalWeights | None = None
    if pretrained is not None:
        state, card, path = read_pretrained(pretrained)
        if card is not None and card.arch != name:
            raise ConfigError(f"{path} holds a '{card.arch}' checkpoint, not a '{name}': call "
                              f"create_model('{card.arch}', pretrained=...) or pass a '{name}' checkpoint.")
        if card is None:  # torchvision, timm, MedicalNet or a plain medzoo state dict: the tensors describe it
            described = recognise_resnet(state, str(path))
            state = described.state
            log.info("%s: %s", path, described.describe())
        else:
            described = card
        # The architecture options (e.g. the stem) belong to the weights; explicit arguments still win.
        kwargs = {**described.model_kwargs, **kwargs}
    options = dict(
        in_chans=(described.in_chans if described else 3) if in_chans is None else in_chans,
        num_classes=(described.num_classes if described else 1000) if num_classes is None else num_classes,
        spatial_dims=(described.spatial_dims if described else 2) if spatial_dims is None else spatial_dims,
        **kwargs,
    )
    if described is not None and num_classes is None:
        _check_head_fits(build, options, state, path)
    model = build(**options)
    if pretrained is not None:
        load_pretrained(model, state, card, source=str(path), depth_init=depth_init)
    return model


def _check_head_fits(build: Any, options: dict[str, Any], state: Mapping[str, torch.Tensor], path: Path) -> None:
    """A class count taken from the file's classifier must come with the classifier's width: a (10**6, 1) tensor
    would otherwise have the model build a (10**6, 512) one. Checked on the meta device, with no memory."""
    with torch.device("meta"):
        model = build(**options)
    key = f"{getattr(model, 'classifier', 'fc')}.weight"
    wanted = model.state_dict().get(key)
    if key in state and wanted is not None and tuple(state[key].shape) != tuple(wanted.shape):
        raise DataError(f"{path}: {key} has shape {tuple(state[key].shape)}, but the model these weights describe "
                        f"takes {tuple(wanted.shape)}; the file is damaged or not this architecture's weights.")


def model_from_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, ModelCard]:
    """Rebuild the model a checkpoint's card describes and load its weights, after checking every tensor's
    name and shape against the model the card describes; any difference is a DataError naming the file."""
    state, card = load_checkpoint(path)
    if not is_model(card.arch):
        error = UnknownNameError(f"model '{card.arch}'")
        raise DataError(f"{path}: the card names architecture '{card.arch}', which this medzoo does not have "
                        f"({', '.join(list_models())}); {error} Upgrade medzoo or use another checkpoint.")
    # The tensors in the file bound what the card may ask to build: its channel and class counts must be
    # dimensions of the weights it carries, so a card cannot make the model larger than the file.
    dims = card.kernel_dims + 2
    if not any(t.ndim == dims and t.shape[1] == card.in_chans for t in state.values()):
        raise DataError(f"{path}: the card says in_chans={card.in_chans}, spatial_dims={card.spatial_dims}"
                        f"{' (2D kernels: ACS)' if card.kernel_dims != card.spatial_dims else ''}, but no conv weight "
                        "in the file has that shape; the card does not belong to these weights.")
    if card.num_classes and not any(t.ndim == 2 and t.shape[0] == card.num_classes for t in state.values()):
        raise DataError(f"{path}: the card says num_classes={card.num_classes}, but no classifier weight in the "
                        "file has that many rows; the card does not belong to these weights.")
    def build() -> torch.nn.Module:
        try:
            return entrypoint(card.arch)(in_chans=card.in_chans, num_classes=card.num_classes,
                                         spatial_dims=card.spatial_dims, **card.model_kwargs)
        except (ConfigError, TypeError, ValueError) as exc:
            raise DataError(f"{path}: cannot build the model its card describes ({exc}).") from exc

    # Shapes first, on the meta device (no memory): the card's options (width, classes, channels) could
    # otherwise describe a model far larger than the tensors that must fill it.
    with torch.device("meta"):
        expected = build().state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{name} {tuple(state[name].shape)} (model: {tuple(tensor.shape)})" for name, tensor in expected.items()
             if name in state and state[name].shape != tensor.shape]
    if missing or unexpected or wrong:
        detail = "; ".join(part for part in (
            f"missing {', '.join(missing[:3])}" if missing else "",
            f"unexpected {', '.join(unexpected[:3])}" if unexpected else "",
            f"wrong shape {', '.join(wrong[:3])}" if wrong else "") if part)
        raise DataError(f"{path}: the weights do not fit the model its card describes ({detail}); the file is "
                        "damaged or its card was edited. Use the checkpoint as medzoo wrote it.")
    model = build()
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), card

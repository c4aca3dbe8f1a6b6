"""Weights from outside the zoo: ResNet state dicts written by torchvision, timm or MedicalNet (as MONAI reads it).

No renaming is needed, only recognising: torchvision's and timm's ResNets name their tensors as medzoo's ResNet
does (conv1, bn1, layer{1-4}.{block}.conv{1-3} / bn{1-3}, layer{1-4}.0.downsample.0 / .1, fc), and MedicalNet's
3D ResNets use the same names behind DataParallel's `module.` prefix, without a classifier, and in the original
release with a segmentation head (`conv_seg.*`) that a classifier has no use for. So a card-less file is read by
stripping that prefix, dropping the segmentation head (counted and logged, never silently), checking every other
name against the ResNet vocabulary, and reading off what the tensors fix: the stem (7x7 or 3x3 first conv), the
width, the shortcut (MedicalNet's ResNet-18/34 have no projection weights: their shortcut pads with zeros), the
input channels, the class count and 2D or 3D. The factory uses those as the file's defaults, as it uses a card's.

Known differences, by design: medzoo's stem is strided like torchvision's and the original MedicalNet's (MONAI's
MedicalNet models keep a stride-1 stem), and, like MONAI, medzoo runs MedicalNet's weights in the classification
ResNet, without the original's dilated layer3/layer4 (same tensors, another receptive field).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from medzoo.errors import DataError

__all__ = ["ExternalWeights", "recognise_resnet"]

log = logging.getLogger(__name__)

_PARAM = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
RESNET_NAME = re.compile(rf"(conv1|bn1|fc)\.{_PARAM}|layer[1-4]\.\d+\.(conv[1-3]|bn[1-3]|downsample\.[01])\.{_PARAM}")
WRAPPER_PREFIXES = ("module.",)  # DataParallel / DistributedDataParallel: MedicalNet's files have it
UNUSED_HEADS = ("conv_seg.",)  # MedicalNet's segmentation decoder
STEM_KERNELS = {7: "imagenet", 3: "small"}
_STEM_CHANNELS = 64  # the first conv's output channels at width 1.0


@dataclass(frozen=True)
class ExternalWeights:
    """A card-less ResNet state dict in medzoo's names, with what its tensors say about the model they fit."""

    state: dict[str, torch.Tensor]
    in_chans: int
    num_classes: int  # 0: the file has no classifier
    spatial_dims: int  # of its kernels
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # stem, width, shortcut where the tensors fix them
    dropped: tuple[str, ...] = ()

    def describe(self) -> str:
        dropped = f", {len(self.dropped)} segmentation-head tensors dropped" if self.dropped else ""
        return (f"{self.spatial_dims}D ResNet weights ({len(self.state)} tensors, {self.in_chans} input channels, "
                f"{self.num_classes or 'no'} classes{dropped})")


def recognise_resnet(state: Mapping[str, torch.Tensor], source: str) -> ExternalWeights:
    """`state` in medzoo's ResNet names; any tensor name that no supported layout has is a DataError."""
    names = list(state)
    for prefix in WRAPPER_PREFIXES:
        if names and all(name.startswith(prefix) for name in names):
            state = {name[len(prefix):]: tensor for name, tensor in state.items()}
    dropped = tuple(name for name in state if name.startswith(UNUSED_HEADS))
    kept = {name: tensor for name, tensor in state.items() if name not in dropped}
    unknown = [name for name in kept if not RESNET_NAME.fullmatch(name)]
    conv = kept.get("conv1.weight")
    if unknown or conv is None or conv.ndim not in (4, 5):
        what = (f"{len(unknown)} of its {len(kept)} tensor names are not a ResNet's ({_some(unknown)})" if unknown
                else "it has no 4D or 5D conv1.weight")
        raise DataError(f"{source}: not a ResNet state dict as torchvision, timm or MedicalNet write them: {what}. "
                        "Pass a medzoo checkpoint, or weights named conv1, bn1, layer1.0.conv1, ..., fc.")
    if dropped:
        log.info("%s: dropped %d tensors of a segmentation head (%s)", source, len(dropped), _some(list(dropped)))
    fc = kept.get("fc.weight")
    return ExternalWeights(state=kept, in_chans=conv.shape[1], num_classes=fc.shape[0] if fc is not None else 0,
                           spatial_dims=conv.ndim - 2, model_kwargs=_implied_options(kept), dropped=dropped)


def _implied_options(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The architecture options the tensors fix; the rest stay the model's defaults or the caller's choice."""
    conv = state["conv1.weight"]
    options: dict[str, Any] = {}
    if conv.shape[-1] in STEM_KERNELS:
        options["stem"] = STEM_KERNELS[conv.shape[-1]]
    if conv.shape[0] != _STEM_CHANNELS:
        options["width"] = conv.shape[0] / _STEM_CHANNELS
    # Stage 2 always changes shape; without projection weights anywhere, the blocks there pad with zeros.
    if any(name.startswith("layer2.") for name in state) and not any(".downsample." in name for name in state):
        options["shortcut"] = "zero_pad"
    return options


def _some(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")

"""ResNet-10/18/34/50 for 2D images and 3D volumes, built on MONAI's ResNet.

The layer names (conv1, bn1, layer1..4, downsample.0/1, fc) and the shortcut (1x1 conv without bias,
then batch norm) follow torchvision, so torchvision-style state dicts line up key for key. Two options exist for
reusing weights from elsewhere: `conv="acs"` runs the 2D kernels on volumes (medzoo.zoo.acs), and
`shortcut="zero_pad"` is the parameter-free shortcut of MedicalNet's ResNet-18/34 (He et al.'s option A).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.nets.resnet import ResNet as MonaiResNet
from monai.networks.nets.resnet import ResNetBlock, ResNetBottleneck
from torch import nn

from medzoo.errors import ConfigError
from medzoo.zoo.acs import convert_to_acs
from medzoo.zoo.registry import register_model

__all__ = ["CONVS", "SHORTCUTS", "STEMS", "ResNet", "ZeroPadShortcut", "resolve_stem", "resnet10", "resnet18", "resnet34", "resnet50"]

STEMS = ("auto", "imagenet", "small")
# Below this size the imagenet stem's 4x downsampling leaves layer4 with a 1x1 (or smaller) map,
# so 28-32 px MedMNIST images get the stride-1 stem instead.
SMALL_INPUT_LIMIT = 64
_BLOCK_INPLANES = [64, 128, 256, 512]
# Batch norm is the default; group norm does not depend on the batch, so it suits tiny per-GPU batches and
# makes a DDP run equal to a one-process run of the same global batch (SyncBatchNorm needs CUDA).
NORMS: dict[str, str | tuple] = {"batch": "batch", "group": ("group", {"num_groups": 32}),
                                 "instance": ("instance", {"affine": True})}
# "standard": 2D convs for images, 3D convs for volumes; "acs": 2D kernels run on volumes over three views.
CONVS = ("standard", "acs")
# Where a block changes the channel count or the resolution: a 1x1 conv + norm ("projection", torchvision's
# and timm's), or a strided identity padded with zero channels ("zero_pad", MedicalNet's ResNet-18/34).
SHORTCUTS = {"projection": "B", "zero_pad": "A"}


def resolve_stem(stem: str, input_size: int | None) -> str:
    """Return "imagenet" or "small" for a `stem` setting ("auto" looks at `input_size`)."""
    if stem not in STEMS:
        raise ConfigError(f"unknown ResNet stem '{stem}': set stem to one of {', '.join(STEMS)}.")
    if stem != "auto":
        return stem
    return "small" if input_size is not None and input_size < SMALL_INPUT_LIMIT else "imagenet"


class ZeroPadShortcut(nn.Module):
    """The "zero_pad" shortcut (He et al.'s option A, MedicalNet's ResNet-18/34): the input at the block's stride,
    padded with zero channels up to `planes`; no parameters."""

    def __init__(self, planes: int, stride: int) -> None:
        super().__init__()
        self.planes, self.stride = planes, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A 1-wide average pool with a stride (MONAI's and MedicalNet's) is this strided slice. MONAI then pads
        # `out.data`, which stops the gradient through the shortcut; padding `out` keeps it.
        out = x[(slice(None), slice(None)) + (slice(None, None, self.stride),) * (x.ndim - 2)]
        return F.pad(out, (0, 0) * (x.ndim - 2) + (0, self.planes - out.shape[1]))

    def extra_repr(self) -> str:
        return f"planes={self.planes}, stride={self.stride}"


def _check_positive_int(key: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key}={value!r} is invalid: set {key} to an integer >= {minimum}.")


class ResNet(MonaiResNet):
    """MONAI's ResNet with a choice of stem and the shared medzoo model surface (timm-style)."""

    first_conv = "conv1"
    classifier = "fc"
    # The out-of-distribution summary's layers (medzoo.engine.ood): three stages' outputs, averaged over space,
    # and the penultimate features (layer4's, pooled: the input of `fc`).
    ood_layers = ("layer1", "layer2", "layer3", "fc")

    def __init__(
        self,
        block: type[ResNetBlock | ResNetBottleneck],
        layers: Sequence[int],
        *,
        arch: str = "resnet",
        in_chans: int = 3,
        num_classes: int = 1000,
        spatial_dims: int = 2,
        stem: str = "auto",
        input_size: int | None = None,
        norm: str = "batch",
        width: float = 1.0,
        conv: str = "standard",
        shortcut: str = "projection",
    ) -> None:
        """Build a ResNet.

        Args:
            block: ResNetBlock (ResNet-10/18/34) or ResNetBottleneck (ResNet-50 and deeper).
            layers: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
            arch: the entrypoint name, recorded for checkpoints.
            stem: "imagenet" (7x7 stride-2 conv + max-pool), "small" (3x3 stride-1 conv, no pool)
                or "auto" ("small" when input_size < 64, else "imagenet").
            input_size: the input's side length in pixels/voxels; only used by stem="auto".
            norm: "batch", "group" (32 groups) or "instance".
            width: channel multiplier of every stage (64-128-256-512 at 1.0; 0.5 keeps a quarter of the
                parameters, for a checkpoint small enough to ship).
            conv: "standard", or "acs" (spatial_dims=3 only): every conv keeps a 2D kernel and runs it over the
                axial, coronal and sagittal views of the volume, so a 2D model's weights load unchanged.
            shortcut: "projection" (1x1 conv + norm where a block changes shape) or "zero_pad" (strided
                identity padded with zero channels, no parameters: MedicalNet's ResNet-18/34).
        """
        _check_positive_int("in_chans", in_chans, 1)
        _check_positive_int("num_classes", num_classes, 0)
        if spatial_dims not in (2, 3):
            raise ConfigError(f"spatial_dims={spatial_dims!r} is invalid: set spatial_dims to 2 or 3.")
        if input_size is not None:
            _check_positive_int("input_size", input_size, 1)
        if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 < width <= 8 \
                or int(_BLOCK_INPLANES[0] * width) < 1:
            raise ConfigError(f"width={width!r} is invalid: set width to a number in (0, 8], e.g. 0.5 or 1.")
        widths = [int(planes * width) for planes in _BLOCK_INPLANES]
        if norm == "group" and any(planes % NORMS["group"][1]["num_groups"] for planes in widths):
            raise ConfigError(f"width={width} gives stages of {widths} channels, which group norm's "
                              f"{NORMS['group'][1]['num_groups']} groups do not divide: pick another width.")
        if norm not in NORMS:
            raise ConfigError(f"unknown norm '{norm}': set norm to one of {', '.join(NORMS)}.")
        if conv not in CONVS:
            raise ConfigError(f"unknown conv '{conv}': set conv to one of {', '.join(CONVS)}.")
        if conv == "acs" and spatial_dims != 3:
            raise ConfigError("conv='acs' runs 2D kernels on volumes: set spatial_dims=3 (a 2D model is the "
                              "standard one).")
        if shortcut not in SHORTCUTS:
            raise ConfigError(f"unknown shortcut '{shortcut}': set shortcut to one of {', '.join(SHORTCUTS)}.")
        resolved = resolve_stem(stem, input_size)
        imagenet = resolved == "imagenet"
        # read by _make_layer, which MONAI's __init__ calls before it returns
        object.__setattr__(self, "_norm_spec", NORMS[norm])
        super().__init__(
            block=block,
            layers=list(layers),
            block_inplanes=list(_BLOCK_INPLANES),
            spatial_dims=spatial_dims,
            n_input_channels=in_chans,
            conv1_t_size=7 if imagenet else 3,
            # MONAI defaults to stride 1 here, which costs 4x (2D) / 8x (3D) the compute of the usual stem.
            conv1_t_stride=2 if imagenet else 1,
            no_max_pool=not imagenet,
            shortcut_type=SHORTCUTS[shortcut],
            norm=NORMS[norm],
            widen_factor=float(width),
            bias_downsample=False,  # torchvision's projection has no bias: batch norm follows it
            feed_forward=False,  # the head is built below so num_classes=0 and reset_classifier share one path
        )
        if not imagenet:
            # An Identity keeps forward_features free of stem branches and makes the module tree honest.
            self.maxpool = nn.Identity()
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in stage:
                if isinstance(block.downsample, partial):  # MONAI's "A" shortcut: a function, not a module
                    block.downsample = ZeroPadShortcut(block.downsample.keywords["planes"],
                                                       block.downsample.keywords["stride"])
        if conv == "acs":
            # Built as a 3D ResNet (3D norms and pools), then every 3D conv becomes an ACS conv with a 2D kernel.
            convert_to_acs(self)

        self.arch = arch
        self.stem = resolved
        self.norm = norm
        self.width = float(width)
        self.conv = conv
        self.shortcut = shortcut
        self.in_chans = in_chans
        self.spatial_dims = spatial_dims
        self.num_features = widths[-1] * block.expansion
        self.num_classes = num_classes
        self.fc: nn.Module = self._make_classifier(num_classes)

    def _make_layer(self, *args: Any, **kwargs: Any) -> nn.Sequential:
        # MONAI 1.6 builds the residual stages without passing its `norm` on (only the stem gets it),
        # so without this a "group" ResNet would still hold batch norm in every block.
        kwargs["norm"] = self._norm_spec
        return super()._make_layer(*args, **kwargs)

    def _make_classifier(self, num_classes: int) -> nn.Module:
        if num_classes == 0:
            return nn.Identity()
        weight = self.conv1.weight
        fc = nn.Linear(self.num_features, num_classes, device=weight.device, dtype=weight.dtype)
        nn.init.zeros_(fc.bias)  # as MONAI and torchvision initialise their heads
        return fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a fresh one for `num_classes` outputs (0: return pooled features)."""
        _check_positive_int("num_classes", num_classes, 0)
        self.num_classes = num_classes
        self.fc = self._make_classifier(num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Return layer4's feature map, before pooling: (B, num_features, *spatial)."""
        x = self.act(self.bn1(self.conv1(x)))
        x = self.maxpool(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool and flatten a feature map, then classify it unless `pre_logits`."""
        # flatten, not MONAI's view: a channels_last map is not always viewable as (B, C).
        x = self.avgpool(x).flatten(1)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits (B, num_classes), or pooled features (B, num_features) when num_classes=0."""
        return self.forward_head(self.forward_features(x))


def _create_resnet(
    arch: str, block: type[ResNetBlock | ResNetBottleneck], layers: Sequence[int], **kwargs: Any
) -> ResNet:
    return ResNet(block, layers, arch=arch, **kwargs)


@register_model
def resnet10(**kwargs: Any) -> ResNet:
    """ResNet-10: basic blocks (1, 1, 1, 1); kwargs as for `ResNet` (in_chans, num_classes, spatial_dims, stem)."""
    return _create_resnet("resnet10", ResNetBlock, (1, 1, 1, 1), **kwargs)


@register_model
def resnet18(**kwargs: Any) -> ResNet:
    """ResNet-18: basic blocks (2, 2, 2, 2); kwargs as for `ResNet` (in_chans, num_classes, spatial_dims, stem)."""
    return _create_resnet("resnet18", ResNetBlock, (2, 2, 2, 2), **kwargs)


@register_model
def resnet34(**kwargs: Any) -> ResNet:
    """ResNet-34: basic blocks (3, 4, 6, 3); kwargs as for `ResNet` (in_chans, num_classes, spatial_dims, stem)."""
    return _create_resnet("resnet34", ResNetBlock, (3, 4, 6, 3), **kwargs)


@register_model
def resnet50(**kwargs: Any) -> ResNet:
    """ResNet-50: bottleneck blocks (3, 4, 6, 3); kwargs as for `ResNet` (in_chans, num_classes, spatial_dims, stem)."""
    return _create_resnet("resnet50", ResNetBottleneck, (3, 4, 6, 3), **kwargs)

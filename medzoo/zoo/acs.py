"""ACS convolutions (Yang et al. 2021, "Reinforcing 2D Representations for 3D Medical Images").

An ACS conv keeps a 2D conv's weight, (out, in, k, k), and runs it on a volume (B, C, D, H, W) by splitting
the output channels into three groups, one per view: the axial group's kernels lie in the (H, W) plane as
(1, k, k), the coronal group's in (D, W) as (k, 1, k), the sagittal group's in (D, H) as (k, k, 1). The weights
are the 2D network's, tensor for tensor, so 2D pretrained weights (ImageNet or medzoo's own checkpoints) load
into the 3D network unchanged: no inflation, no averaging over depth.

The property that makes the reuse sound, and that tests/test_acs.py checks: on a volume constant along the
axis a view does not look along, that view's output channels are exactly the 2D conv of its kernels applied to
the volume's cross-section. On an image (B, C, H, W) an ACS conv is the plain 2D conv it was built from.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["VIEWS", "ACSConv", "convert_to_acs", "view_channels"]

# (view, the volume axis (0: D, 1: H, 2: W) its kernels have size 1 along)
VIEWS = (("axial", 0), ("coronal", 1), ("sagittal", 2))


def view_channels(out_channels: int) -> tuple[int, int, int]:
    """How many output channels each view gets: as even as possible, the first views take the remainder."""
    share, extra = divmod(out_channels, len(VIEWS))
    return tuple(share + (i < extra) for i in range(len(VIEWS)))  # type: ignore[return-value]


def _square(name: str, value: tuple[int, ...]) -> int:
    # Each view turns the kernel's two axes onto two of the volume's three: a square kernel, stride, padding and
    # dilation keep the three views' outputs the same size, so they can be stacked along channels.
    if len(set(value)) != 1:
        raise ValueError(f"an ACS conv needs a square {name}, got {value}")
    return value[0]


class ACSConv(nn.Conv2d):
    """A 2D conv (same weight, same state dict) that convolves a volume over its axial, coronal and sagittal
    views, one third of its output channels each; an image goes through it as through the 2D conv."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 dilation: int = 1, bias: bool = True, device: torch.device | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
                         bias=bias, device=device, dtype=dtype)
        self.view_channels = view_channels(out_channels)
        if not isinstance(self.padding, tuple):  # "same"/"valid" would hide the per-view padding asked for below
            raise ValueError(f"an ACS conv needs integer padding, got {self.padding!r}")
        for name in ("kernel_size", "stride", "padding", "dilation"):
            _square(name, getattr(self, name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Volumes (B, C, D, H, W) through the three views; images (B, C, H, W) through the 2D conv."""
        if x.ndim == 4:
            return super().forward(x)
        if x.ndim != 5:
            raise ValueError(f"an ACS conv takes (B, C, D, H, W) volumes or (B, C, H, W) images, got {tuple(x.shape)}")
        stride = _square("stride", self.stride)
        if self.kernel_size == (1, 1):  # every view of a 1x1 kernel is the same 1x1x1 kernel: one conv
            return F.conv3d(x, self.weight[..., None], self.bias, stride)
        pad, dilation = self.padding[0], self.dilation[0]
        biases = self.bias.split(self.view_channels) if self.bias is not None else [None] * len(VIEWS)
        outputs = []
        for (_, flat_axis), weight, bias in zip(VIEWS, self.weight.split(self.view_channels), biases):
            # The kernel has size 1 along `flat_axis`: no padding or dilation there, the 2D ones on the other two.
            padding = tuple(0 if axis == flat_axis else pad for axis in range(3))
            dilations = tuple(1 if axis == flat_axis else dilation for axis in range(3))
            outputs.append(F.conv3d(x, weight.unsqueeze(2 + flat_axis), bias, stride, padding, dilations))
        return torch.cat(outputs, dim=1)


def convert_to_acs(module: nn.Module) -> int:
    """Replace every cubic nn.Conv3d inside `module` with an ACSConv of the same settings, freshly initialised
    as its 2D counterpart would be (Kaiming normal, fan-out, as MONAI and torchvision initialise ResNets); return
    how many were replaced."""
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Conv3d):
            if child.groups != 1 or child.padding_mode != "zeros":
                raise ValueError(f"{name}: an ACS conv needs groups=1 and zero padding")
            weight = child.weight
            acs = ACSConv(child.in_channels, child.out_channels, _square("kernel_size", child.kernel_size),
                          stride=_square("stride", child.stride), padding=_square("padding", child.padding),
                          dilation=_square("dilation", child.dilation), bias=child.bias is not None,
                          device=weight.device, dtype=weight.dtype)
            nn.init.kaiming_normal_(acs.weight, mode="fan_out", nonlinearity="relu")
            if acs.bias is not None:
                nn.init.zeros_(acs.bias)
            setattr(module, name, acs)
            count += 1
        else:
            count += convert_to_acs(child)
    return count

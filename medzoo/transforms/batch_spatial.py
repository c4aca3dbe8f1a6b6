"""Per-batch spatial steps: flips, quarter turns, the affine warp (one `grid_sample`), resizes, crops, holes."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from medzoo.errors import ConfigError
from medzoo.transforms import spatial
from medzoo.transforms.batch_transform import (
    BatchParams,
    BatchTransform,
    _float,
    _integers,
    _select,
    _uniform,
)

_PADDING = {"constant": "zeros", "reflect": "reflection", "replicate": "border"}


class HorizontalFlip(BatchTransform):
    """Mirror left-right the samples that fire."""
    sample_twin = spatial.HorizontalFlip

    def apply(self, x: torch.Tensor, params: BatchParams, max_value: float | None = None) -> torch.Tensor:
        return _select(params["apply"], x.flip(-1), x)


class VerticalFlip(BatchTransform):
    """Mirror top-bottom the samples that fire."""
    sample_twin = spatial.VerticalFlip

    def apply(self, x: torch.Tensor, params: BatchParams, max_value: float | None = None) -> torch.Tensor:
        return _select(params["apply"], x.flip(-2), x)


class RandomRotate90(BatchTransform):
    """Rotate each sample by its own k x 90 degrees counter-clockwise; odd k needs square images."""
    sample_twin = spatial.RandomRotate90

    def sample_batch(self, generator: torch.Generator, shape: tuple[int, ...]) -> BatchParams:
        return {"k": _integers(0, 3, shape[0], generator)}

    def apply(self, x: torch.Tensor, params: BatchParams, max_value: float | None = None) -> torch.Tensor:
        k = torch.where(params["apply"], params["k"], torch.zeros_like(params["k"]))
        if x.shape[-1] != x.shape[-2]:
            if bool((k % 2 == 1).any()):
                raise ConfigError(f"RandomRotate90 on a batch needs square images, got {tuple(x.shape[-2:])}: "
                                 "a quarter turn would give samples of different shapes")
        out = x
        for turns in (1, 2, 3):
            out = torch.where((k == turns).view(-1, 1, 1, 1), torch.rot90(x, turns, (-2, -1)), out)
        return out


def _pixel_to_normalised(height: int, width: int) -> torch.Tensor:
    """3 x 3 matrix from pixel coordinates to grid_sample's [-1, 1] (align_corners=False)."""
    return torch.tensor([[2.0 / width, 0.0, 1.0 / width - 1.0],
                         [0.0, 2.0 / height, 1.0 / height - 1.0],
                         [0.0, 0.0, 1.0]], dtype=torch.float64)


def affine_theta(angle: torch.Tensor, scale: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor,
                 height: int, width: int, scale_y: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 2, 3) `affine_grid` matrices (output -> input, normalised) of `multichannel.affine_matrix`."""
    rad = torch.deg2rad(angle.double().cpu())
    sx = scale.double().cpu()
    sy = sx if scale_y is None else scale_y.double().cpu()
    a, b = torch.cos(rad) * sx, torch.sin(rad) * sy
    c, d = -torch.sin(rad) * sx, torch.cos(rad) * sy
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    forward = torch.zeros(angle.shape[0], 3, 3, dtype=torch.float64)
    forward[:, 0, 0], forward[:, 0, 1] = a, b
    forward[:, 1, 0], forward[:, 1, 1] = c, d
    forward[:, 0, 2] = cx + tx.double().cpu() - a * cx - b * cy
    forward[:, 1, 2] = cy + ty.double().cpu() - c * cx - d * cy
    forward[:, 2, 2] = 1.0
    norm = _pixel_to_normalised(height, width)
    return (norm @ torch.linalg.inv(forward) @ torch.linalg.inv(norm))[:, :2]


class Affine(BatchTransform):
    """Rotate, scale and translate each sample with its own matrix, in one grid_sample for the batch."""
    sample_twin = spatial.Affine

    def sample_batch(self, generator: torch.Generator, shape: tuple[int, ...]) -> BatchParams:
        batch, _, height, width = shape
        params = {"angle": _uniform(self.rotate, batch, generator),
                  "scale": _uniform(self.scale, batch, generator),
                  "tx": _uniform(self.translate_percent, batch, generator) * width,
                  "ty": _uniform(self.translate_percent, batch, generator) * height}
        if self.whole_pixels:
            params["tx"], params["ty"] = torch.trunc(params["tx"]), torch.trunc(params["ty"])
        if not self.keep_ratio:
            params["scale_y"] = _uniform(self.scale, batch, generator)
        return params

    def apply(self, x: torch.Tensor, params: BatchParams, max_value: float | None = None) -> torch.Tensor:
        xf = _float(x)
        height, width = xf.shape[-2:]
        theta = affine_theta(params["angle"], params["scale"], params["tx"], params["ty"], height, width,
                             params.get("scale_y"))
        grid = F.affine_grid(theta.to(xf.device, xf.dtype), list(xf.shape), align_corners=False)
        # grid_sample pads with zeros only; shifting by `fill` makes the padding equal `fill`
        shift = self.fill if self.border_mode == "constant" and self.fill != 0.0 else 0.0
        out = F.grid_sample(xf - shift if shift else xf, grid, mode=self.interpolation,
                            padding_mode=_PADDING[self.border_mode], align_corners=False)
        return _select(params["apply"], out + shift if shift else out, xf)


def _crop_grid(y0: torch.Tensor, x0: torch.Tensor, h: torch.Tensor, w: torch.Tensor, size: tuple[int, int],
               in_size: tuple[int, int], interpolation: str, device: torch.device) -> torch.Tensor:
    """grid_sample grid that resizes each sample's crop box like cv2.resize: edges clamp inside the crop."""
    axes = []
    for start, extent, out_len, in_len in ((x0, w, size[1], in_size[1]), (y0, h, size[0], in_size[0])):
        start, extent = start.double().cpu()[:, None], extent.double().cpu()[:, None]
        dst = torch.arange(out_len, dtype=torch.float64)[None]
        step = extent / out_len
        if interpolation == "nearest":
            src = torch.minimum(torch.floor(dst * step), extent - 1)
        else:
            src = torch.minimum(((dst + 0.5) * step - 0.5).clamp(min=0.0), extent - 1)
        axes.append((2.0 * (src + start) + 1.0) / in_len - 1.0)
    gx, gy = axes
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)
    return grid.to(device)


class Resize(BatchTransform):
    """Resize every sample to height x width (the batch always resizes, whatever `p`)."""
    sample_twin = spatial.Resize

    def apply(self, x: torch.Tensor, params: BatchParams, max_value: float | None = None) -> torch.Tensor:
        xf = _float(x)
        if self.interpolation == "nearest":
            return F.interpolate(xf, size=(self.height, self.width), mode="nearest")
        return F.interpolate(xf, size=(self.height, self.width), mode="bilinear", align_corners=False,
                             antialias=False)


class RandomResizedCrop(BatchTransform):
    """Each sample's own random crop resized to `size`, all in one grid_sample.

    Samples that do not fire are resized whole, as on the CPU, so that the batch keeps one shape.
    """
    sample_twin = spatial.RandomResizedCrop

    def sample_batch(self, generator: torch.Generator, shape: tuple[int, ...]) -> BatchParams:
        batch, _, height, width = shape
        tries, area = 10, height * width
        target = _uniform((self.scale[0] * area, self.scale[1] * area), batch * tries, generator)
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        aspect = torch.exp(_uniform(log_ratio, batch * tries, generator))
        w = torch.round(torch.sqrt(target * aspect)).view(batch, tries)
        h = torch.round(torch.sqrt(target / aspect)).view(batch, tries)
        starts = torch.rand(batch, tries, 2, generator=generator, dtype=torch.float64)
        valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first = valid.double().argmax(dim=1)  # the first try that fits, as the CPU loop takes
        pick = torch.arange(batch)
        w, h, starts = w[pick, first], h[pick, first], starts[pick, first]
        y0 = torch.floor((height - h + 1) * starts[:, 0])
        x0 = torch.floor((width - w + 1) * starts[:, 1])
        fw, fh = self.fallback_size(height, width)  # when no try fits
        found = valid.any(dim=1)
        return {"y0": torch.where(found, y0, float((height - fh) // 2)).long(),
                "x0": torch.where(found, x0, float((width - fw) // 2)).long(),
                "h": torch.where(found, h, float(fh)).long(), "w": torch.where(found, w, float(fw)).long()}

    def apply(self, x: torch.Tensor, params: BatchParams, max_value: float | None = None) -> torch.Tensor:
        xf = _float(x)
        height, width = xf.shape[-2:]
        fires = params["apply"].cpu()
        whole = {"y0": 0, "x0": 0, "h": height, "w": width}
        box = [torch.where(fires, params[key].cpu(), whole[key]) for key in ("y0", "x0", "h", "w")]
        grid = _crop_grid(*box, self.size, (height, width), self.interpolation, xf.device)
        return F.grid_sample(xf, grid.to(xf.dtype), mode=self.interpolation, padding_mode="border",
                             align_corners=False)



class CoarseDropout(BatchTransform):
    """Fill each sample's own random rectangles with `fill` in every channel."""
    sample_twin = spatial.CoarseDropout

    def sample_batch(self, generator: torch.Generator, shape: tuple[int, ...]) -> BatchParams:
        batch, _, height, width = shape
        most = self.num_holes_range[1]
        count = _integers(self.num_holes_range[0], most, batch, generator)
        sizes = []
        for (low, high), extent in ((self.hole_height_range, height), (self.hole_width_range, width)):
            if high >= 1:
                sizes.append(_integers(int(low), int(min(high, extent)), (batch, most), generator))
            else:
                fractions = _uniform((low, high), batch * most, generator).view(batch, most)
                sizes.append((extent * fractions).long())
        heights, widths = sizes
        starts = torch.rand(2, batch, most, generator=generator, dtype=torch.float64)
        y0 = torch.floor(starts[0] * (height - heights + 1))
        x0 = torch.floor(starts[1] * (width - widths + 1))
        holes = torch.stack([y0.long(), x0.long(), y0.long() + heights, x0.long() + widths], dim=-1)
        used = torch.arange(most)[None, :] < count[:, None]
        return {"holes": holes * used[..., None]}  # unused holes become empty boxes

    def apply(self, x: torch.Tensor, params: BatchParams, max_value: float | None = None) -> torch.Tensor:
        xf = _float(x)
        holes = params["holes"].to(xf.device)
        rows = torch.arange(xf.shape[-2], device=xf.device).view(1, 1, -1, 1)
        cols = torch.arange(xf.shape[-1], device=xf.device).view(1, 1, 1, -1)
        y0, x0, y1, x1 = (holes[..., i, None, None] for i in range(4))
        inside = ((rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)).any(dim=1, keepdim=True)
        inside = inside & params["apply"].view(-1, 1, 1, 1)
        return xf.masked_fill(inside, self.fill)


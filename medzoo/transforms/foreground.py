"""Cropping to the foreground before caching (an albumentations step; recipes name it
`medzoo.transforms.intensity.CropForeground`, its name since the first checkpoints)."""

from __future__ import annotations

from typing import Any

import albumentations as A
import numpy as np


def foreground_box(image: np.ndarray, threshold: float, margin: float) -> tuple[int, int, int, int]:
    """Bounding box (top, bottom, left, right) of pixels brighter than `threshold` x max, plus a margin."""
    plane = image.max(axis=-1) if image.ndim == 3 else image
    mask = plane > threshold * float(plane.max() or 1)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    height, width = plane.shape
    if rows.size == 0 or cols.size == 0:
        return 0, height, 0, width
    pad_r, pad_c = int(margin * (rows[-1] - rows[0] + 1)), int(margin * (cols[-1] - cols[0] + 1))
    return (max(rows[0] - pad_r, 0), min(rows[-1] + 1 + pad_r, height),
            max(cols[0] - pad_c, 0), min(cols[-1] + 1 + pad_c, width))


class CropForeground(A.ImageOnlyTransform):
    """Crop to the bright foreground (the head in an MRI slice) and pad it to a centred square.

    Sources of the same modality frame the anatomy differently (black borders, zoom); cropping to
    the foreground removes that framing, which otherwise acts as a source-specific shortcut.
    """

    def __init__(self, threshold: float = 0.1, margin: float = 0.02, square: bool = True, p: float = 1.0):
        super().__init__(p=p)
        self.threshold, self.margin, self.square = threshold, margin, square

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        top, bottom, left, right = foreground_box(img, self.threshold, self.margin)
        crop = img[top:bottom, left:right]
        if not self.square:
            return np.ascontiguousarray(crop)
        side = max(crop.shape[:2])
        out = np.zeros((side, side, *crop.shape[2:]), dtype=crop.dtype)
        y0, x0 = (side - crop.shape[0]) // 2, (side - crop.shape[1]) // 2
        out[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("threshold", "margin", "square")

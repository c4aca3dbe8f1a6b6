"""What image folders need on top of the `image` reader: `to_channels`. The decoding itself (`decode_image`,
`DecodedImage`, `IMAGE_EXTENSIONS`, `MAX_PIXELS`) lives in `medzoo/datasets/readers/image.py`, the `image` entry of
`READERS`, and is re-exported here so that `from medzoo.datasets.images import decode_image` keeps working."""

from __future__ import annotations

import numpy as np

from medzoo.datasets.readers.image import IMAGE_EXTENSIONS, MAX_PIXELS, DecodedImage, decode_image
from medzoo.errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "MAX_PIXELS", "DecodedImage", "decode_image", "to_channels"]


def to_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    """Give a uint8 HWC image exactly `channels` channels (luminance for colour -> 1, replication for 1 -> C)."""
    have = pixels.shape[-1]
    if have == channels:
        return pixels
    if have == 1:
        return np.repeat(pixels, channels, axis=-1)
    if channels == 1 and have == 3:
        weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return np.round(pixels.astype(np.float32) @ weights).astype(np.uint8)[..., None]
    raise DataError(f"cannot convert a {have}-channel image to {channels} channels; set data.channels to {have}.")

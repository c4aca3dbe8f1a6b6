"""Canonical channel-first layout for any channel count."""

from __future__ import annotations

import numpy as np


def to_channel_first(array: np.ndarray, channel_axis: int = -1, contiguous: bool = True) -> np.ndarray:
    """Move `channel_axis` to the front: HWC -> CHW, DHWC -> CDHW, for any number of channels.

    Returns a view when the result is already C-contiguous (or `contiguous=False`), otherwise
    exactly one copy. Stock operators often accept only 1, 3 or 4 channels; this accepts any.
    """
    moved = np.moveaxis(array, channel_axis, 0)
    if contiguous and not moved.flags.c_contiguous:
        return np.ascontiguousarray(moved)
    return moved


def to_channel_last(array: np.ndarray, channel_axis: int = 0) -> np.ndarray:
    """Move `channel_axis` to the end as a view (CHW -> HWC), the layout OpenCV and albumentations expect."""
    return np.moveaxis(array, channel_axis, -1)

"""Canonical channel-first layout for any channel count."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medzoo.errors import ConfigError, DataError


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


DEPTH_MODES = ("crop", "pad", "resample")


def depth_to_channels(volume: np.ndarray, channels: int | None = None, mode: str = "resample") -> np.ndarray:
    """A 2.5D slice stack: (C, D, H, W) -> (C * D', H, W), slices becoming channels.

    With `channels` set, the depth is first brought to `channels // C` slices: `crop` keeps the central
    slices (and pads if there are too few), `pad` adds zero slices on both sides (and crops if too many),
    `resample` interpolates linearly along depth. Without it the depth is kept. A view when nothing changes.
    """
    if volume.ndim != 4:
        raise ValueError(f"depth_to_channels expects C x D x H x W, got shape {volume.shape}")
    c, d, h, w = volume.shape
    if channels is not None:
        if channels % c:
            raise ConfigError(f"{channels} channels cannot be split evenly over {c} input channel(s)")
        volume = fit_depth(volume, channels // c, mode)
    return volume.reshape(c * volume.shape[1], h, w)


def fit_depth(volume: np.ndarray, depth: int, mode: str) -> np.ndarray:
    """Bring a C x D x H x W volume to `depth` slices by centred crop, centred zero padding, or resampling."""
    if mode not in DEPTH_MODES:
        raise ConfigError(f"unknown depth mode '{mode}': use one of {', '.join(DEPTH_MODES)}")
    have = volume.shape[1]
    if have == depth:
        return volume
    if mode == "resample":
        positions = np.linspace(0, have - 1, depth)
        low = np.floor(positions).astype(int)
        high = np.minimum(low + 1, have - 1)
        weight = (positions - low).astype(np.float32)[None, :, None, None]
        out = volume[:, low] * (1 - weight) + volume[:, high] * weight
        return out.astype(volume.dtype) if np.issubdtype(volume.dtype, np.floating) else \
            np.round(out).astype(volume.dtype)
    if have > depth:
        start = (have - depth) // 2
        return volume[:, start:start + depth]
    before = (depth - have) // 2
    return np.pad(volume, ((0, 0), (before, depth - have - before), (0, 0), (0, 0)))


def canonical_layout(array: np.ndarray, layout: str, source: str | Path, channels: int | None = None,
                     depth_mode: str = "resample") -> np.ndarray:
    """Bring a reader's `(C, H, W)` or `(C, D, H, W)` array to `layout` (see `prepare`); a view if it can."""
    shape = tuple(array.shape)
    if layout == "auto":
        return array
    if layout == "image":
        if array.ndim == 4 and shape[1] == 1:
            return array[:, 0]
        if array.ndim != 3:
            raise DataError(f"{source}: layout=image needs a 2D image (C, H, W) but the reader gave {shape}. "
                            "Use layout=slices (depth becomes channels) or layout=volume.")
        return array
    if layout == "volume":
        if array.ndim != 4:
            raise DataError(f"{source}: layout=volume needs (C, D, H, W) but the reader gave {shape}. For "
                            "a TIFF stack pass data.reader_kwargs.as_volume=true; for 2D data, layout=image.")
        return array
    stack = array if array.ndim == 4 else array[None]  # a (C, H, W) stack is already one slice per channel
    try:
        return depth_to_channels(stack, channels, depth_mode)
    except ValueError as exc:
        raise DataError(f"{source}: cannot make a slice stack of {channels} channels from shape {shape}: "
                        f"{exc}.") from exc


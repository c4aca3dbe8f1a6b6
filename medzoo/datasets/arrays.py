"""What a data source hands on: one split as arrays (`SplitArrays`), and what decoding it found (`DecodeReport`).

The arrays may be decoded images held in memory, a decode-once cache's memory maps, MedMNIST arrays, or a
prepared store's samples read as they are used (`prepared_store.arrays.MappedSamples`): anything indexable by
sample with `shape`, `dtype` and `nbytes`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class DecodeReport:
    """What decoding found: files skipped (with reasons), grayscale stored as RGB, colour converted."""

    skipped: list[tuple[str, str]] = field(default_factory=list)
    stored_gray_rgb: int = 0
    colour_converted: int = 0

    def as_dict(self) -> dict:
        return {"skipped": len(self.skipped), "skipped_files": [k for k, _ in self.skipped],
                "skip_reasons": dict(self.skipped), "stored_gray_rgb": self.stored_gray_rgb,
                "colour_converted": self.colour_converted}


@dataclass
class SplitArrays:
    """A split as arrays: `images` N x C x H x W (or N x C x D x H x W), `labels` N int64, `keys` N names
    (relative paths)."""

    images: np.ndarray | Any  # an ndarray, or array-like (MappedSamples)
    labels: np.ndarray
    keys: list[str]
    report: DecodeReport = field(default_factory=DecodeReport)

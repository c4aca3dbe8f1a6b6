"""Class balance and image size / mode per split and class."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from medzoo.audit.hashing import ImageFacts


def class_balance(facts: list[ImageFacts], classes: list[str], splits: list[str]) -> dict[str, dict[str, int]]:
    """Files per split and class (unreadable files included: they are still in the folders)."""
    counts = Counter((f.split, f.label) for f in facts)
    return {split: {name: counts[split, label] for label, name in enumerate(classes)} for split in splits}


def image_sizes(facts: list[ImageFacts], classes: list[str], splits: list[str]) -> list[dict[str, Any]]:
    """One row per split and class: decoded files, distinct sizes, commonest size and its share, median and
    range of width and height, and the modes met."""
    rows = []
    for split in splits:
        for label, name in enumerate(classes):
            group = [f for f in facts if f.split == split and f.label == label and f.readable]
            if not group:
                rows.append({"split": split, "class": name, "files": 0})
                continue
            sizes = Counter((f.width, f.height) for f in group)
            (width, height), common = sizes.most_common(1)[0]
            widths, heights = np.array([f.width for f in group]), np.array([f.height for f in group])
            rows.append({"split": split, "class": name, "files": len(group), "distinct_sizes": len(sizes),
                         "common_size": f"{width}x{height}", "common_share": round(common / len(group), 3),
                         "median_size": f"{int(np.median(widths))}x{int(np.median(heights))}",
                         "width_range": [int(widths.min()), int(widths.max())],
                         "height_range": [int(heights.min()), int(heights.max())],
                         "modes": dict(Counter(f.mode for f in group).most_common()),
                         "median_file_kb": round(float(np.median([f.file_size for f in group])) / 1024, 1)})
    return rows

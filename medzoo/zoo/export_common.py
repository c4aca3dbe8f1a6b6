"""What every export format shares: a safe file name made from a card, and how close an export must stay
to PyTorch."""

from __future__ import annotations

import re

ONNX_TOLERANCE = 1e-4


def safe_name(name: str) -> str:
    """A file or folder name made from a card's name: letters, digits, '_', '-' and '.' only, never '..' or a
    path, so whatever the card says, an export stays inside its run directory."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._-")[:64]
    return cleaned or "model"

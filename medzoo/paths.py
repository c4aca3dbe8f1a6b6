"""Where medzoo keeps its files when config does not say: `MEDZOO_HOME` (default `~/.cache/medzoo`)."""

from __future__ import annotations

import os
from pathlib import Path


def medzoo_home() -> Path:
    """`$MEDZOO_HOME`, else `~/.cache/medzoo`."""
    return Path(os.environ.get("MEDZOO_HOME") or "~/.cache/medzoo").expanduser()


def cache_home() -> Path:
    """Decoded-sample caches and audit manifests."""
    return medzoo_home() / "cache"

"""Size limits that a user may set through the environment (MEDZOO_MAX_*_BYTES), read one way."""

from __future__ import annotations

import os

from medzoo.errors import ConfigError


def env_bytes(name: str, example: int, unset_means: str = "") -> int | None:
    """The positive byte count in $`name`, or None when it is unset; anything else is a ConfigError."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} is not a positive number of bytes; set it to e.g. {example} or unset "
                          f"it{unset_means}.")
    return value

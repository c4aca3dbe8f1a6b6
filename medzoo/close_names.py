"""Helpers for registries: closest-name suggestions for unknown names."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from medzoo.errors import UnknownNameError


def unknown_name(kind: str, name: str, known: Iterable[str]) -> UnknownNameError:
    """Build the error for an unknown `kind` called `name`, listing the closest known names."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.4)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    listing = ", ".join(known) if len(known) <= 30 else f"{len(known)} names"
    return UnknownNameError(f"unknown {kind} '{name}'.{hint} Known: {listing}.")

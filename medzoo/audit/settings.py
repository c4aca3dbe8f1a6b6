"""The audit's settings (`audit.*` in conf/audit.yaml), checked once so that a wrong value names its key."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from medzoo.errors import ConfigError


@dataclass(frozen=True)
class AuditSettings:
    """Thresholds and sizes of the duplicate search and the shortcut check."""

    workers: int = 2
    draft_size: int = 256
    thumb_size: int = 64
    hash_size: int = 8
    phash_max_distance: int = 12
    dhash_max_distance: int = 12
    min_correlation: float = 0.95
    min_aligned_correlation: float = 0.99
    cv_folds: int = 5
    shortcut_margin: float = 0.10
    seed: int = 0
    max_listed: int = 40

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> AuditSettings:
        """Build from `audit.*`; `workers: auto` means one thread per CPU core."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ConfigError(f"unknown audit setting(s) {unknown}; known: {sorted(known)}.")
        values = dict(cfg)
        if values.get("workers", "auto") in ("auto", None):
            values["workers"] = os.cpu_count() or 1
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        """Raise ConfigError naming the first out-of-range setting."""
        for name in ("workers", "draft_size", "thumb_size", "cv_folds", "max_listed"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"audit.{name}={getattr(self, name)} must be a positive integer.")
        if self.hash_size < 2:
            raise ConfigError(f"audit.hash_size={self.hash_size} must be at least 2 (imagehash's minimum).")
        bits = self.hash_size ** 2
        for name in ("phash_max_distance", "dhash_max_distance"):
            if not 0 <= getattr(self, name) <= bits:
                raise ConfigError(f"audit.{name}={getattr(self, name)} must lie in 0..{bits} "
                                  f"(the bits of a hash of audit.hash_size={self.hash_size}).")
        if not 0.0 <= self.shortcut_margin < 1.0:
            raise ConfigError(f"audit.shortcut_margin={self.shortcut_margin} must lie in [0, 1).")
        for name in ("min_correlation", "min_aligned_correlation"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ConfigError(f"audit.{name}={getattr(self, name)} must lie in (0, 1].")

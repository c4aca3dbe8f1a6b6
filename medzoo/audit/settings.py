"""The audit's settings (`audit.*` in conf/audit.yaml), checked once so that a wrong value names its key."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from medzoo.errors import ConfigError


@dataclass(frozen=True)
class AuditSettings:
    """Thresholds and sizes of the duplicate search, the shortcut check and the label-error search."""

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
    source_predictable: float = 0.90
    source_label_association: float = 0.30
    seed: int = 0
    max_listed: int = 40
    label_issues: bool = False
    label_features: str = "checkpoint"
    label_checkpoints: tuple[str, ...] = ("brain_tumor_resnet18_cpu",)
    label_layers: tuple[str, ...] = ("layer3", "layer4")
    label_folds: int = 5
    label_seed: int = 0
    label_c: float = 0.003
    label_filter: str = "prune_by_noise_rate"
    label_batch_size: int = 64
    label_thumbnails: int = 24
    label_thumb_size: int = 96
    progress: bool = True

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
        for name in ("label_checkpoints", "label_layers"):
            if name in values:
                values[name] = _names(name, values[name])
        _check_types(values)
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
        for name in ("source_predictable", "source_label_association"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"audit.{name}={getattr(self, name)} must lie in [0, 1].")
        for name in ("min_correlation", "min_aligned_correlation"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ConfigError(f"audit.{name}={getattr(self, name)} must lie in (0, 1].")
        self.check_label_settings()

    def check_label_settings(self) -> None:
        """Raise ConfigError naming the first wrong `audit.label_*` setting."""
        if self.label_features not in LABEL_FEATURES:
            raise ConfigError(f"audit.label_features={self.label_features!r} is unknown: set it to one of "
                              f"{', '.join(LABEL_FEATURES)}.")
        if self.label_features == "checkpoint" and not self.label_checkpoints:
            raise ConfigError("audit.label_checkpoints is empty: name at least one zoo checkpoint or .safetensors "
                              "path (e.g. [brain_tumor_resnet18_cpu]), or set audit.label_features=hog.")
        if self.label_features == "checkpoint" and not self.label_layers:
            raise ConfigError("audit.label_layers is empty: name the modules whose pooled outputs are the "
                              "features (e.g. [layer3, layer4]).")
        if self.label_folds < 2:
            raise ConfigError(f"audit.label_folds={self.label_folds} must be at least 2 (out-of-sample "
                              "probabilities need a held-out fold).")
        if not 0.0 < self.label_c < float("inf"):
            raise ConfigError(f"audit.label_c={self.label_c} must be a positive number (inverse regularisation "
                              "strength of the logistic regression).")
        if self.label_filter not in LABEL_FILTERS:
            raise ConfigError(f"audit.label_filter={self.label_filter!r} is unknown: set it to one of "
                              f"{', '.join(LABEL_FILTERS)} (cleanlab's filter_by).")
        for name in ("label_batch_size", "label_thumb_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"audit.{name}={getattr(self, name)} must be a positive integer.")
        if self.label_thumbnails < 0:
            raise ConfigError(f"audit.label_thumbnails={self.label_thumbnails} must be 0 or more.")


# Features for the label-error search: a checkpoint's pooled activations, or label-blind image statistics computed
# from the audit's own thumbnails (no weights needed).
LABEL_FEATURES = ("checkpoint", "hog", "pixels")
# cleanlab.filter.find_label_issues(filter_by=...) choices for single-label data.
LABEL_FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given",
                 "low_normalized_margin", "low_self_confidence")
_TYPES = {"label_issues": (bool,), "label_features": (str,), "label_folds": (int,), "label_seed": (int,),
          "label_c": (int, float), "label_filter": (str,), "label_batch_size": (int,), "label_thumbnails": (int,),
          "label_thumb_size": (int,), "progress": (bool,)}

_KIND = {bool: "true or false", str: "a name", int: "an integer", float: "a number"}


def _check_types(values: Mapping[str, Any]) -> None:
    """Raise ConfigError naming a `label_*` setting (or `progress`) of the wrong type (`label_folds: five`,
    `label_issues: 1`)."""
    for name, types in _TYPES.items():
        if name not in values:
            continue
        value = values[name]
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            raise ConfigError(f"audit.{name}={value!r} must be {_KIND[types[-1]]}.")


def _names(key: str, value: Any) -> tuple[str, ...]:
    """A list of names from YAML (a single string is accepted as a list of one)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        example = "[layer3, layer4]" if key == "label_layers" else "[brain_tumor_resnet18_cpu]"
        raise ConfigError(f"audit.{key}={value!r} must be a list of names, e.g. {example}.")
    return tuple(value)

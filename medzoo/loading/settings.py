"""Typed loader settings: the `loader` config group (conf/loader/) as a checked dataclass, so that the engine
reads fields, not a DictConfig, and a wrong value stops the run before any work with the key named
(`loader.batch_size=0`, `loader.device_cache=maybe`).

The loader settings were once keys of every data config; a data config that still carries one is told where it
went (`moved_loader_keys`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from omegaconf import OmegaConf

from medzoo.close_names import unknown_name
from medzoo.errors import ConfigError


@dataclass(frozen=True)
class LoaderSettings:
    """What `conf/loader/default.yaml` documents, checked."""

    batch_size: int = 64  # per process: the global batch is batch_size x processes x accumulation
    eval_batch_size: int | None = None  # null: batch_size
    num_workers: int | str = "auto"
    device_cache: bool | str = False
    device_augment: bool | str = False
    batch_ring: bool | str = "auto"

    @property
    def eval_batch(self) -> int:
        return self.eval_batch_size or self.batch_size

    @classmethod
    def from_config(cls, config: Any, where: str = "loader") -> LoaderSettings:
        """Settings from the `loader` group (a DictConfig, a mapping or already LoaderSettings); null values
        keep the defaults."""
        if isinstance(config, LoaderSettings):
            return config
        values = OmegaConf.to_container(config, resolve=True) if OmegaConf.is_config(config) else dict(config or {})
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where}: a mapping of settings expected.")
        known = [f.name for f in fields(cls)]
        for key in values:
            if key not in known:
                error = unknown_name(f"{where} setting", str(key), known)
                raise ConfigError(f"{where}.{key} is not a setting ({error}); a `+` before a key adds it without "
                                  "checking it: drop the `+` and fix the name.")
        settings = cls(**{k: v for k, v in values.items() if v is not None or k == "eval_batch_size"})
        settings.check(where)
        return settings

    def merged(self, values: Mapping[str, Any], where: str = "loader") -> LoaderSettings:
        """These settings with the non-null `values` on top, checked."""
        current = {f.name: getattr(self, f.name) for f in fields(self)}
        return LoaderSettings.from_config({**current, **{k: v for k, v in values.items() if v is not None}}, where)

    def check(self, where: str = "loader") -> None:
        for key, optional in (("batch_size", False), ("eval_batch_size", True)):
            value = getattr(self, key)
            if optional and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{where}.{key}={value!r}: a whole number >= 1 expected.")
        workers = self.num_workers
        if workers != "auto" and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
            raise ConfigError(f"{where}.num_workers={workers!r}: auto or a whole number >= 0 expected.")
        for key in ("device_cache", "device_augment", "batch_ring"):
            value = getattr(self, key)
            if not (isinstance(value, bool) or value == "auto"):
                raise ConfigError(f"{where}.{key}={getattr(self, key)!r}: true, false or auto.")


LOADER_KEYS = tuple(f.name for f in fields(LoaderSettings))


def moved_loader_keys(data: Mapping[str, Any], where: str = "data") -> None:
    """A data config that still sets a loader key is an error that names the key and its new place."""
    for key in LOADER_KEYS:
        if key in data:
            raise ConfigError(f"{where}.{key} is a loader setting: write loader.{key}={_shown(data[key])} (the "
                              "`loader` group, conf/loader/: default, gpu, medmnist, stacks); data configs hold "
                              "only where the data is and how it is split.")


def _shown(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)

"""Typed trainer settings: the `trainer` config group as a checked dataclass, so that the engine below the
command layer reads fields, not a DictConfig, and a wrong value stops the run before any work with the key
named (`trainer.max_epochs=-1`, a typo added with `+trainer.max_epoch=1`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from omegaconf import OmegaConf

from medzoo.close_names import unknown_name
from medzoo.errors import ConfigError

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
ON_NONFINITE = ("stop", "skip")
LR_SCALINGS = ("none", "linear")
WEIGHTS_DTYPES = ("bfloat16", "float16", "float32")


@dataclass
class TrainerSettings:
    """What `conf/trainer/default.yaml` documents, checked. `device` and `precision` are resolved by
    engine.runtime and engine.precision, which name the key in their own errors."""

    max_epochs: int = 30
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool = True
    compile: bool = False
    compile_mode: str = "default"
    accumulate_grad_batches: int = 1
    grad_clip_norm: float | None = None
    label_smoothing: float = 0.0
    mix: dict[str, Any] = field(default_factory=dict)
    freeze: tuple[str, ...] = ()
    class_weights: Any = None
    monitor: str = "accuracy"
    early_stopping_patience: int | None = None
    lr_scaling: str = "none"
    sync_batchnorm: bool = False
    deterministic: bool = False
    resume: str | None = None
    on_nonfinite: str = "stop"
    log_every_n_steps: int = 20
    progress: bool = True
    ood: bool = True  # fit the out-of-distribution summary (medzoo.engine.ood) into best.safetensors
    weights_dtype: str = "float16"  # floating weights in best/last.safetensors (the metrics are measured on them)
    save_last: bool = False  # also write last.safetensors, the last epoch's weights with their card
    keep_resume_state: bool = False  # keep last.pt after the run ends (it is written every epoch either way)

    @classmethod
    def from_config(cls, config: Any, where: str = "trainer") -> TrainerSettings:
        """Settings from the `trainer` group (a DictConfig, a mapping or already TrainerSettings)."""
        if isinstance(config, TrainerSettings):
            return config
        values = OmegaConf.to_container(config, resolve=True) if OmegaConf.is_config(config) else dict(config or {})
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where}: a mapping of settings expected.")
        known = {f.name for f in fields(cls)}
        for key in values:
            if key not in known:
                error = unknown_name(f"{where} setting", str(key), sorted(known))
                raise ConfigError(f"{where}.{key} is not a setting ({error}); a `+` before a key adds it without "
                                  "checking it: drop the `+` and fix the name.")
        values = dict(values)
        values["freeze"] = tuple(values.get("freeze") or ())
        values["mix"] = dict(values.get("mix") or {})
        settings = cls(**values)
        settings.check(where)
        return settings

    def check(self, where: str = "trainer") -> None:
        def at_least(key: str, low: int, optional: bool = False) -> None:
            value = getattr(self, key)
            if optional and value is None:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{where}.{key}={value!r}: a whole number >= {low} expected.")

        at_least("max_epochs", 1)
        at_least("accumulate_grad_batches", 1)
        at_least("log_every_n_steps", 1)
        at_least("early_stopping_patience", 1, optional=True)
        if self.grad_clip_norm is not None and not (isinstance(self.grad_clip_norm, (int, float))
                                                    and self.grad_clip_norm > 0):
            raise ConfigError(f"{where}.grad_clip_norm={self.grad_clip_norm!r}: null or a positive number expected.")
        if not (isinstance(self.label_smoothing, (int, float)) and 0.0 <= self.label_smoothing < 1.0):
            raise ConfigError(f"{where}.label_smoothing={self.label_smoothing!r}: a number in [0, 1) expected.")
        for key, choices in (("compile_mode", COMPILE_MODES), ("on_nonfinite", ON_NONFINITE),
                             ("lr_scaling", LR_SCALINGS), ("weights_dtype", WEIGHTS_DTYPES)):
            if getattr(self, key) not in choices:
                raise ConfigError(f"{where}.{key}={getattr(self, key)!r}: one of {', '.join(choices)}.")
        for key in ("channels_last", "compile", "sync_batchnorm", "deterministic", "progress", "ood", "save_last",
                    "keep_resume_state"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"{where}.{key}={getattr(self, key)!r}: true or false.")

    def get(self, key: str, default: Any = None) -> Any:
        """Mapping-style access, for code written against the config group."""
        return getattr(self, key, default)

"""Mixed precision: bf16 autocast where the hardware has it, fp16 with a GradScaler otherwise."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from medzoo.errors import ConfigError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def cpu_has_bf16() -> bool:
    """True when this CPU executes bf16 natively (AVX512-BF16 or AMX); emulated bf16 is slower than fp32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


@dataclass(frozen=True)
class Precision:
    """A resolved precision for one device: the autocast dtype (None for fp32) and whether to scale the loss."""

    name: str
    device_type: str

    @classmethod
    def resolve(cls, requested: str, device: torch.device) -> Precision:
        """Turn `auto` into the fastest safe choice for `device`."""
        if requested not in PRECISIONS:
            raise ConfigError(f"trainer.precision must be one of {PRECISIONS}, not {requested!r}")
        if requested == "auto":
            if device.type == "cuda":
                requested = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
            else:
                requested = "bf16" if cpu_has_bf16() else "fp32"
        if requested == "fp16" and device.type != "cuda":
            raise ConfigError("trainer.precision=fp16 needs a CUDA device; use bf16 or fp32 on CPU.")
        return cls(requested, device.type)

    @property
    def dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context for forward passes (a no-op in fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A GradScaler that is active only for fp16 (bf16 has fp32's range and needs none)."""
        return torch.amp.GradScaler(self.device_type, enabled=self.name == "fp16")

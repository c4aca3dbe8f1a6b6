"""The medzoo checkpoint: safetensors weights with the model's card (JSON metadata) in the same file.

Loading never unpickles: safetensors holds only tensors and strings. Plain PyTorch state dicts are
imported with `torch.load(weights_only=True)` only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from medzoo.errors import DataError

FORMAT = "medzoo-checkpoint/1"
LICENSE_NOTE = "research and teaching only; not a medical device and not for diagnosis"


def save_checkpoint(path: str | Path, model: torch.nn.Module, card: dict[str, Any],
                    dtype: torch.dtype | None = None) -> Path:
    """Write the model's weights (floating ones cast to `dtype` if given, e.g. fp16 for a smaller published
    file) and `card` to `path` atomically (a crash never leaves a partial file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in model.state_dict().items()}
    if dtype is not None:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": FORMAT, "card": json.dumps(card, default=str)})
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # safetensors creates the file owner-only; a checkpoint is meant to be shared
    os.replace(tmp, path)
    return path


def read_card(path: str | Path) -> dict[str, Any]:
    """The card stored in a medzoo checkpoint, without loading its tensors."""
    with _open(path) as handle:
        return _card(handle.metadata(), path)


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Weights and card of a medzoo checkpoint (`.safetensors`)."""
    with _open(path) as handle:
        card = _card(handle.metadata(), path)
        return {name: handle.get_tensor(name) for name in handle.keys()}, card


def model_from_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild the model a checkpoint describes and load its weights (strictly)."""
    from medzoo.zoo.registry import create_model

    state, card = load_checkpoint(path)
    model = create_model(card["arch"], in_chans=card["in_chans"], num_classes=card["num_classes"],
                         spatial_dims=card["spatial_dims"], **card.get("model_kwargs", {}))
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), card


def trained_channels_last(card: dict[str, Any]) -> bool:
    """Whether the model ran in channels_last during training; inference uses the same layout so that
    evaluation reproduces the training run's figures bit for bit."""
    trainer = card.get("config", {}).get("trainer", {})
    return bool(trainer.get("channels_last", False)) and card.get("spatial_dims") == 2


def _open(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint not found: {path}. Pass ckpt=PATH to a .safetensors file written by medzoo.")
    try:
        return safe_open(str(path), framework="pt")
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable safetensors checkpoint ({exc}). The file may be truncated or "
                        "not a medzoo checkpoint; pickled .pt/.pth files are never loaded as checkpoints.") from exc


def _card(metadata: dict[str, str] | None, path: str | Path) -> dict[str, Any]:
    if not metadata or metadata.get("format") != FORMAT or "card" not in metadata:
        raise DataError(f"{path}: safetensors file without a medzoo card (format {FORMAT!r}); "
                        "it holds weights only, so the model it belongs to is unknown.")
    return json.loads(metadata["card"])

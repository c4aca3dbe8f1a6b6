"""Export to TorchScript: a traced module, reloaded and compared with the model it came from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medzoo.zoo.card import ModelCard
from medzoo.zoo.export_common import safe_name


def export_torchscript(model: torch.nn.Module, card: ModelCard, inputs: torch.Tensor, out: Path) -> dict[str, Any]:
    """A traced TorchScript module, reloaded and compared on `inputs`."""
    path = out / f"{safe_name(card.arch)}.torchscript.pt"
    with torch.no_grad():
        traced = torch.jit.trace(model, inputs[:1])
    traced.save(str(path))
    reloaded = torch.jit.load(str(path))
    with torch.no_grad():
        difference = float((reloaded(inputs) - model(inputs)).abs().max())
    return {"path": str(path), "max_abs_difference": difference, "checked_on": int(inputs.shape[0])}

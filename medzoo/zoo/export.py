"""Export a checkpoint to ONNX (checked with onnxruntime), TorchScript, or a MONAI bundle that MONAI's own
runner executes, preprocessing included (`python -m monai.bundle run --config_file configs/inference.json`)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from medzoo.errors import ConfigError
from medzoo.zoo.card import ModelCard
from medzoo.zoo.export_bundle import export_monai_bundle, network_def
from medzoo.zoo.export_bundle_preprocessing import BUNDLE_STEPS, STEPS_MODULE, bundle_transforms
from medzoo.zoo.export_common import ONNX_TOLERANCE, safe_name
from medzoo.zoo.export_onnx import EXPORT_EXTRA, _require_onnx, export_onnx, onnx_metadata
from medzoo.zoo.export_torchscript import export_torchscript

__all__ = ["BUNDLE_STEPS", "EXPORTERS", "EXPORT_EXTRA", "ONNX_TOLERANCE", "STEPS_MODULE", "bundle_transforms",
           "export", "export_monai_bundle", "export_onnx", "export_torchscript", "network_def",
           "onnx_metadata", "safe_name"]

log = logging.getLogger(__name__)

EXPORTERS: dict[str, Callable[..., dict[str, Any]]] = {
    "onnx": export_onnx, "torchscript": export_torchscript, "monai-bundle": export_monai_bundle,
}


def export(model: torch.nn.Module, card: ModelCard, fmt: str, inputs: torch.Tensor, out: Path,
           source: str = "checkpoint") -> dict[str, Any]:
    """Export a copy of `model` (fp32, eval mode, on the CPU; `model` itself is left as it is) in format `fmt`
    into folder `out`. `source` names the checkpoint in messages."""
    if fmt not in EXPORTERS:
        raise ConfigError(f"unknown export format '{fmt}': use format={'|'.join(EXPORTERS)}")
    if fmt == "onnx":
        _require_onnx()
    if fmt == "monai-bundle":
        bundle_transforms(card, source)  # a step the bundle cannot express fails here, naming the file
    out.mkdir(parents=True, exist_ok=True)
    result = EXPORTERS[fmt](copy.deepcopy(model).float().cpu().eval(), card, inputs.float().cpu(), out)
    log.info("exported %s -> %s", fmt, result["path"])
    return result

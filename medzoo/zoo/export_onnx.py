"""Export to ONNX: a graph with a dynamic batch axis and the card in its metadata, checked with
onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medzoo.errors import ConfigError, DataError
from medzoo.zoo.card import ModelCard
from medzoo.zoo.export_common import ONNX_TOLERANCE, safe_name

EXPORT_EXTRA = "pip install 'medzoo[export]'"


def _reference(model: torch.nn.Module, inputs: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(inputs).float().numpy()


def _require_onnx() -> None:
    """onnx, onnxscript (the exporter) and onnxruntime (the check), or a ConfigError naming the extra."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"format=onnx needs onnx, onnxscript and onnxruntime, and {exc.name or exc} is not "
                          f"installed: {EXPORT_EXTRA}") from exc


def onnx_metadata(card: ModelCard) -> dict[str, str]:
    """What a user of the .onnx file needs beside the graph: the preprocessing, classes and input spec."""
    data = card.to_dict()
    return {"medzoo_card_preprocessing": json.dumps(data["preprocessing"]),
            "medzoo_classes": json.dumps(data["classes"]), "medzoo_input": json.dumps(data["input"]),
            "medzoo_arch": card.arch, "medzoo_in_chans": str(card.in_chans),
            "medzoo_output": "logits (apply softmax over axis 1 for class probabilities)",
            "medzoo_card_schema": str(card.schema_version), "medzoo_license": card.provenance.license,
            "medzoo_intended_use": card.provenance.intended_use}


def export_onnx(model: torch.nn.Module, card: ModelCard, inputs: torch.Tensor, out: Path) -> dict[str, Any]:
    """ONNX with a dynamic batch axis and the card's preprocessing in its metadata; the max
    |onnxruntime - PyTorch| on `inputs` must be <= 1e-4 (fp32)."""
    _require_onnx()
    import onnxruntime

    path = out / f"{safe_name(card.arch)}.onnx"
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(model, (inputs,), dynamo=True, input_names=["image"], output_names=["logits"],
                                dynamic_shapes=({0: batch},), verbose=False)
    program.model.metadata_props.update(onnx_metadata(card))
    program.save(str(path))  # one file; weights go to a .data file beside it only above ONNX's 2 GB limit
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    difference = float(np.abs(session.run(None, {"image": inputs.numpy()})[0] - _reference(model, inputs)).max())
    if difference > ONNX_TOLERANCE:
        raise DataError(f"{path}: onnxruntime differs from PyTorch by {difference:.2e} (> {ONNX_TOLERANCE}); "
                        "the export is not faithful and should not be used.")
    return {"path": str(path), "max_abs_difference": difference, "checked_on": int(inputs.shape[0])}

"""Export a checkpoint to ONNX (checked with onnxruntime), TorchScript, or a MONAI bundle."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medzoo.errors import ConfigError, DataError

log = logging.getLogger(__name__)
ONNX_TOLERANCE = 1e-4


def _reference(model: torch.nn.Module, inputs: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(inputs).float().numpy()


def export_onnx(model: torch.nn.Module, card: dict, inputs: torch.Tensor, out: Path) -> dict[str, Any]:
    """ONNX with a dynamic batch axis; the max |onnxruntime - PyTorch| on `inputs` must be <= 1e-4 (fp32)."""
    import onnxruntime

    path = out / f"{card['arch']}.onnx"
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(model, (inputs,), str(path), dynamo=True, input_names=["image"], output_names=["logits"],
                      dynamic_shapes=({0: batch},), verbose=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    difference = float(np.abs(session.run(None, {"image": inputs.numpy()})[0] - _reference(model, inputs)).max())
    if difference > ONNX_TOLERANCE:
        raise DataError(f"{path}: onnxruntime differs from PyTorch by {difference:.2e} (> {ONNX_TOLERANCE}); "
                        "the export is not faithful and should not be used.")
    return {"path": str(path), "max_abs_difference": difference, "checked_on": int(inputs.shape[0])}


def export_torchscript(model: torch.nn.Module, card: dict, inputs: torch.Tensor, out: Path) -> dict[str, Any]:
    """A traced TorchScript module, reloaded and compared on `inputs`."""
    path = out / f"{card['arch']}.torchscript.pt"
    with torch.no_grad():
        traced = torch.jit.trace(model, inputs[:1])
    traced.save(str(path))
    reloaded = torch.jit.load(str(path))
    with torch.no_grad():
        difference = float((reloaded(inputs) - model(inputs)).abs().max())
    return {"path": str(path), "max_abs_difference": difference, "checked_on": int(inputs.shape[0])}


def network_def(card: dict) -> dict[str, Any]:
    """The network as a MONAI bundle config: plain MONAI ResNet for batch-norm models (no medzoo needed)."""
    kwargs = card.get("model_kwargs", {})
    blocks = {"resnet10": ("basic", [1, 1, 1, 1]), "resnet18": ("basic", [2, 2, 2, 2]),
              "resnet34": ("basic", [3, 4, 6, 3]), "resnet50": ("bottleneck", [3, 4, 6, 3])}
    if card["arch"] in blocks and kwargs.get("norm", "batch") == "batch":
        block, layers = blocks[card["arch"]]
        imagenet = kwargs.get("stem") == "imagenet"
        return {"_target_": "monai.networks.nets.ResNet", "block": block, "layers": layers,
                "block_inplanes": [64, 128, 256, 512], "widen_factor": kwargs.get("width", 1.0),
                "spatial_dims": card["spatial_dims"],
                "n_input_channels": card["in_chans"], "conv1_t_size": 7 if imagenet else 3,
                "conv1_t_stride": 2 if imagenet else 1, "no_max_pool": not imagenet, "shortcut_type": "B",
                "bias_downsample": False, "num_classes": card["num_classes"]}
    return {"_target_": "medzoo.zoo.create_model", "name": card["arch"], "in_chans": card["in_chans"],
            "num_classes": card["num_classes"], "spatial_dims": card["spatial_dims"], **kwargs}


def export_monai_bundle(model: torch.nn.Module, card: dict, inputs: torch.Tensor, out: Path) -> dict[str, Any]:
    """A MONAI bundle folder: configs/inference.json, configs/metadata.json, models/model.pt, docs/README.md."""
    root = out / f"{card.get('recipe') or card['arch']}_bundle"
    if root.exists():
        shutil.rmtree(root)
    for sub in ("configs", "models", "docs"):
        (root / sub).mkdir(parents=True)
    torch.save(model.state_dict(), root / "models" / "model.pt")
    inference = {
        "imports": ["$import torch"],
        "bundle_root": ".",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "network_def": network_def(card),
        "network": "$@network_def.to(@device)",
        "checkpoint": "$@bundle_root + '/models/model.pt'",
        "load_weights": "$@network.load_state_dict(torch.load(@checkpoint, map_location=@device, weights_only=True))",
        "inferer": {"_target_": "SimpleInferer"},
        "postprocessing": {"_target_": "Activations", "softmax": True},
        "medzoo_preprocessing": card["preprocessing"],
    }
    size = card.get("input_size", [])
    metadata = {
        "version": "0.1.0",
        "monai_version": _version("monai"), "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__, "required_packages_version": {},
        "task": f"classification: {', '.join(card['classes'])}",
        "description": f"{card['arch']} trained by medzoo recipe {card.get('recipe')}",
        "authors": "medzoo", "copyright": "see license", "license": card.get("license", ""),
        "intended_use": card.get("intended_use", ""),
        "changelog": {"0.1.0": "exported by medzoo"},
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "magnitude", "num_channels": card["in_chans"],
                                 "spatial_shape": size, "dtype": "float32", "value_range": [],
                                 "is_patch_data": False, "channel_def": {}}},
            "outputs": {"pred": {"type": "probabilities", "format": "classes", "num_channels": card["num_classes"],
                                 "spatial_shape": [1], "dtype": "float32", "value_range": [0, 1],
                                 "is_onehot": False, "channel_def": dict(enumerate(card["classes"]))}},
        },
        "medzoo_metrics": card.get("metrics", {}).get("test", {}),
    }
    (root / "configs" / "inference.json").write_text(json.dumps(inference, indent=2, default=str) + "\n")
    (root / "configs" / "metadata.json").write_text(json.dumps(metadata, indent=2, default=str) + "\n")
    (root / "docs" / "README.md").write_text(
        f"# {card['arch']} ({card.get('recipe')})\n\nClasses: {', '.join(card['classes'])}. Input: "
        f"{card['in_chans']} channel(s), {size}, preprocessed as `medzoo_preprocessing` in inference.json says.\n\n"
        f"Intended use: {card.get('intended_use', '')}.\n")
    return {"path": str(root)}


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


EXPORTERS: dict[str, Callable[..., dict[str, Any]]] = {
    "onnx": export_onnx, "torchscript": export_torchscript, "monai-bundle": export_monai_bundle,
}


def export(model: torch.nn.Module, card: dict, fmt: str, inputs: torch.Tensor, out: Path) -> dict[str, Any]:
    """Export `model` (fp32, eval mode, on the CPU) in format `fmt` into folder `out`."""
    if fmt not in EXPORTERS:
        raise ConfigError(f"unknown export format '{fmt}': use format={'|'.join(EXPORTERS)}")
    out.mkdir(parents=True, exist_ok=True)
    result = EXPORTERS[fmt](model.float().cpu().eval(), card, inputs.float().cpu(), out)
    log.info("exported %s -> %s", fmt, result["path"])
    return result

"""Export to a MONAI bundle folder that MONAI's own runner executes, preprocessing included: the network as
a bundle config, checked against the checkpoint, the inference and metadata configs, and the README."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medzoo.errors import DataError
from medzoo.zoo.card import ModelCard
from medzoo.zoo.export_bundle_preprocessing import BUNDLE_STEPS, STEPS_MODULE, bundle_transforms
from medzoo.zoo.export_common import ONNX_TOLERANCE, safe_name


def network_def(card: ModelCard) -> dict[str, Any]:
    """The network as a MONAI bundle config: plain MONAI ResNet for batch-norm models (no medzoo needed)."""
    kwargs = card.model_kwargs
    blocks = {"resnet10": ("basic", [1, 1, 1, 1]), "resnet18": ("basic", [2, 2, 2, 2]),
              "resnet34": ("basic", [3, 4, 6, 3]), "resnet50": ("bottleneck", [3, 4, 6, 3])}
    if card.arch in blocks and kwargs.get("norm", "batch") == "batch":
        block, layers = blocks[card.arch]
        imagenet = kwargs.get("stem") == "imagenet"
        return {"_target_": "monai.networks.nets.ResNet", "block": block, "layers": layers,
                "block_inplanes": [64, 128, 256, 512], "widen_factor": kwargs.get("width", 1.0),
                "spatial_dims": card.spatial_dims,
                "n_input_channels": card.in_chans, "conv1_t_size": 7 if imagenet else 3,
                "conv1_t_stride": 2 if imagenet else 1, "no_max_pool": not imagenet, "shortcut_type": "B",
                "bias_downsample": False, "num_classes": card.num_classes}
    return {"_target_": "medzoo.zoo.create_model", "name": card.arch, "in_chans": card.in_chans,
            "num_classes": card.num_classes, "spatial_dims": card.spatial_dims, **kwargs}


def _inert(value: Any) -> Any:
    """Card text made inert for a MONAI config, where a string starting with '$', '@' or '%' is code, a
    reference or a macro: a card is data, and no part of it may run when the bundle does."""
    if isinstance(value, str):
        return " " + value if value.startswith(("$", "@", "%")) else value
    if isinstance(value, dict):
        return {_inert(str(k)): _inert(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_inert(v) for v in value]
    return value


def _check_bundle_network(definition: dict[str, Any], weights: Path, model: torch.nn.Module,
                          inputs: torch.Tensor) -> float:
    """Max |bundle network - model| on `inputs`, the bundle network built from its config by MONAI and loaded
    (strictly) from the saved weights, as the runner will."""
    from monai.bundle import ConfigParser

    network = ConfigParser({"network_def": definition}).get_parsed_content("network_def")
    network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    network.eval()
    with torch.no_grad():
        return float((network(inputs).float() - model(inputs).float()).abs().max())


def export_monai_bundle(model: torch.nn.Module, card: ModelCard, inputs: torch.Tensor, out: Path) -> dict[str, Any]:
    """A MONAI bundle folder that MONAI's runner executes end to end, preprocessing included:
    configs/inference.json, configs/metadata.json, models/model.pt, scripts/medzoo_steps.py, docs/README.md."""
    transforms, table = bundle_transforms(card)  # refuse before writing anything
    root = out / f"{safe_name(card.recipe or card.arch)}_bundle"
    if root.exists():
        raise DataError(f"{root} already exists; export never replaces a folder it did not create. Choose another "
                        "run directory (hydra.run.dir=DIR).")
    for sub in ("configs", "models", "docs", "scripts"):
        (root / sub).mkdir(parents=True)
    torch.save(model.state_dict(), root / "models" / "model.pt")
    definition = network_def(card)
    difference = _check_bundle_network(definition, root / "models" / "model.pt", model, inputs)
    if difference > ONNX_TOLERANCE:
        raise DataError(f"{root}: the bundle's network differs from the checkpoint's by {difference:.2e} "
                        f"(> {ONNX_TOLERANCE}); the bundle is not faithful and should not be used.")
    (root / "scripts" / "__init__.py").write_text("")
    (root / "scripts" / "medzoo_steps.py").write_text(BUNDLE_STEPS)
    inference = {
        "imports": ["$import torch"],
        "bundle_root": ".",
        "input": None,
        "output_dir": "$@bundle_root + '/eval'",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "classes": _inert(list(card.classes)),
        "network_def": definition,
        "network": "$@network_def.to(@device)",
        "checkpoint": "$@bundle_root + '/models/model.pt'",
        "load_weights": "$@network.load_state_dict(torch.load(@checkpoint, map_location=@device, weights_only=True))",
        "image_files": {"_target_": f"{STEPS_MODULE}.list_images", "path": "@input"},
        "datalist": "$[{'image': path, 'path': path} for path in @image_files]",
        "preprocessing": {"_target_": "Compose", "transforms": transforms},
        "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                       "num_workers": 0},
        "inferer": {"_target_": "SimpleInferer"},
        "postprocessing": {"_target_": "Activations", "softmax": True},
        "evaluator": {"_target_": f"{STEPS_MODULE}.Predictor", "network": "@network", "dataloader": "@dataloader",
                      "inferer": "@inferer", "postprocessing": "@postprocessing", "classes": "@classes",
                      "output_dir": "@output_dir", "device": "@device"},
        "run": ["$@load_weights", "$@evaluator.run()"],
    }
    size = card.input_size or []
    metadata = _inert({
        "version": "0.1.0",
        "monai_version": _version("monai"), "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "required_packages_version": {"opencv-python-headless": _version("opencv-python-headless"),
                                      "pillow": _version("pillow")},
        "task": f"classification: {', '.join(card.classes)}",
        "description": f"{card.arch} trained by medzoo recipe {card.recipe}",
        "authors": "medzoo", "copyright": "see license", "license": card.provenance.license,
        "intended_use": card.provenance.intended_use,
        "changelog": {"0.1.0": "exported by medzoo"},
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "magnitude", "num_channels": card.in_chans,
                                 "spatial_shape": size, "dtype": "float32", "value_range": [],
                                 "is_patch_data": False, "channel_def": {}}},
            "outputs": {"pred": {"type": "probabilities", "format": "classes", "num_channels": card.num_classes,
                                 "spatial_shape": [1], "dtype": "float32", "value_range": [0, 1],
                                 "is_onehot": False, "channel_def": dict(enumerate(card.classes))}},
        },
        "medzoo_preprocessing": card.to_dict()["preprocessing"],
        "medzoo_metrics": card.metrics.get("test", {}),
    })
    (root / "configs" / "inference.json").write_text(json.dumps(inference, indent=2, default=str) + "\n")
    (root / "configs" / "metadata.json").write_text(json.dumps(metadata, indent=2, default=str) + "\n")
    (root / "docs" / "README.md").write_text(_bundle_readme(card, table))
    return {"path": str(root), "max_abs_difference": difference, "checked_on": int(inputs.shape[0])}


def _bundle_readme(card: ModelCard, table: list[list[str]]) -> str:
    rows = "\n".join(f"| {' | '.join(cells)} |" for cells in table)
    return (f"# {card.arch} ({card.recipe})\n\nClasses: {', '.join(card.classes)}. Input: {card.in_chans} "
            f"channel(s), {card.input_size or 'any size'}.\n\n"
            "## Run\n\nFrom this folder, with MONAI, torch, numpy, Pillow and OpenCV installed (not medzoo):\n\n"
            "```\npython -m monai.bundle run --config_file configs/inference.json --input IMAGE_OR_FOLDER "
            "[--output_dir DIR]\n```\n\n"
            "It writes `predictions.csv` and `predictions.json` (class probabilities per image, as "
            "`medzoo predict` does) into `eval/` or DIR.\n\n"
            "## Preprocessing\n\nThe checkpoint's preprocessing (`medzoo_preprocessing` in configs/metadata.json), "
            "step by step:\n\n| medzoo step | bundle transform | equivalence |\n|---|---|---|\n"
            f"{rows}\n\n`medzoo_steps` is scripts/medzoo_steps.py in this bundle.\n\n"
            f"Intended use: {card.provenance.intended_use}.\n")


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"

"""`medzoo export ckpt=... format=onnx|torchscript|monai-bundle`: a checkpoint in a deployable format."""

from __future__ import annotations

import math

import torch
from omegaconf import DictConfig

from medzoo.commands.common import run_directory
from medzoo.datasets.readers.registry import check_array_bytes
from medzoo.engine.inference import Preprocessor, list_inputs
from medzoo.engine.reports import write_json
from medzoo.errors import DataError
from medzoo.zoo import hub
from medzoo.zoo.card import ModelCard
from medzoo.zoo.export import export as export_model
from medzoo.zoo.factory import model_from_checkpoint


def check_inputs(cfg: DictConfig, card: ModelCard, source: str) -> torch.Tensor:
    """Real preprocessed images when `inputs` is set, else seeded random inputs of the model's shape."""
    if cfg.inputs:
        preprocess = Preprocessor(card, source)
        tensors = [tensor for path in list_inputs(cfg.inputs) for _, tensor in preprocess.items(path)]
        return torch.stack(tensors[: int(cfg.max_inputs)])
    generator = torch.Generator().manual_seed(0)
    if card.input.size is None:
        raise DataError(f"{source}: the card records no input size; pass inputs=FILE_OR_DIR to check the export on.")
    shape = (2, card.in_chans, *card.input.size)
    check_array_bytes(4 * math.prod(shape), source, f"an export check input of shape {shape} (input.size)")
    return torch.randn(*shape, generator=generator)


def export(cfg: DictConfig) -> dict:
    run_dir = run_directory()
    path = hub.resolve(cfg.ckpt)
    model, card = model_from_checkpoint(path, "cpu")
    result = export_model(model, card, cfg.format, check_inputs(cfg, card, str(path)), run_dir, str(path))
    write_json(run_dir / "export.json", {"checkpoint": str(cfg.ckpt), "format": cfg.format, **result})
    print(result["path"])
    return result

"""The card stored inside every checkpoint: what the model is, how to feed it, and how it was made."""

from __future__ import annotations

import platform
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from medzoo.datasets.base import DataSplits
from medzoo.transforms.spec import TransformSpec
from medzoo.zoo.checkpoint import LICENSE_NOTE

VERSIONED = ("medzoo", "torch", "monai", "albumentations", "numpy")


def versions() -> dict[str, str]:
    """Versions of the packages that shape a checkpoint."""
    found = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def build_card(cfg: DictConfig, splits: DataSplits, model: torch.nn.Module, spec: TransformSpec,
               precision: str, metrics: dict[str, Any] | None = None, epoch: int | None = None) -> dict[str, Any]:
    """The card for `model` trained by `cfg` on `splits`."""
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    return {
        "arch": model.arch,
        "model_kwargs": {"stem": model.stem, "norm": getattr(model, "norm", "batch"),
                         "width": getattr(model, "width", 1.0)},
        "in_chans": splits.in_chans,
        "num_classes": len(splits.classes),
        "classes": list(splits.classes),
        "spatial_dims": splits.spatial_dims,
        "input_size": splits.input_size,
        "preprocessing": spec.card(),
        "precision": precision,
        "recipe": cfg.get("recipe_name"),
        "epoch": epoch,
        "metrics": metrics or {},
        "data": {"name": data_cfg.get("name"), "fingerprint": splits.fingerprint,
                 "num_train": len(splits.train.labels), "num_val": len(splits.val.labels),
                 "num_test": len(splits.test.labels),
                 # how `medzoo prepare` laid the sources out (reader, layout, channels...), for predict
                 **({"prepared": splits.report["prepared_settings"]} if "prepared_settings" in splits.report else {})},
        "config": OmegaConf.to_container(cfg, resolve=True),
        "versions": versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "license": "weights: Apache-2.0; check the training data's own license",
        "intended_use": LICENSE_NOTE,
    }

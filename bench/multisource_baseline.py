"""A checkpoint on the per-source splits of a multi-source recipe: the baseline of its adoption rule.

The multi-source recipe's adoption rule compares its `val_brain_tumor` balanced accuracy with that of the
published one-source checkpoint on the same group-aware validation split. This script builds that recipe's
splits (from the decode cache a training run left) and measures a checkpoint on them, through the recipe's
evaluation transforms. Class names are matched by position: both vocabularies list glioma, meningioma, no
tumour and pituitary in that order, which the script checks.

    MEDZOO_DATA=PATH/TO/data python bench/multisource_baseline.py --ckpt brain_tumor_resnet18_cpu \
        --recipe brain_tumor_multisource_cpu --splits val_brain_tumor val_tcga_lgg
"""
from __future__ import annotations

import argparse
import json

import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from medzoo.engine.loaders import eval_loader
from medzoo.engine.precision import Precision
from medzoo.engine.recipe_parts import load_splits
from medzoo.engine.trainer import detailed_metrics, predict_probs
from medzoo.loading.settings import LoaderSettings
from medzoo.recipes import register_recipes
from medzoo.transforms.spec import TransformSpec
from medzoo.zoo import hub
from medzoo.zoo.factory import model_from_checkpoint

SAME_ORDER = ("glioma", "meningioma", "no", "pituitary")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="a zoo name or a .safetensors path")
    parser.add_argument("--recipe", required=True, help="the multi-source recipe whose splits to use")
    parser.add_argument("--splits", nargs="+", default=["val_brain_tumor"])
    parser.add_argument("overrides", nargs="*", help="extra recipe overrides (key=value)")
    args = parser.parse_args()
    register_recipes()
    with initialize_config_module(config_module="medzoo.conf", version_base=None):
        cfg = compose(config_name="train", overrides=[f"recipe={args.recipe}", *args.overrides])
    device = torch.device("cpu")
    model, card = model_from_checkpoint(hub.resolve(args.ckpt), device)
    spec = TransformSpec.from_config(cfg.transforms)
    splits = load_splits(OmegaConf.to_container(cfg.data, resolve=True), spec)
    pairs = list(zip(card.classes, splits.classes, strict=True))
    for theirs, ours in pairs:
        if not any(theirs.lower().startswith(word) and ours.lower().startswith(word) for word in SAME_ORDER):
            raise SystemExit(f"class order differs: {pairs}")
    precision = Precision.resolve(card.precision, device)
    results = {}
    for name in args.splits:
        probs, labels = predict_probs(model, eval_loader(splits, name, spec, LoaderSettings.from_config(cfg.loader), device), device, precision)
        metrics = detailed_metrics(probs, labels, list(splits.classes))
        results[name] = {key: metrics[key] for key in ("accuracy", "balanced_accuracy", "num_samples", "per_class",
                                                       "confusion_matrix") if key in metrics}
    print(json.dumps({"checkpoint": args.ckpt, "recipe": args.recipe, "splits": results}, indent=1))


if __name__ == "__main__":
    main()

"""Which features would make the OOD flag (medzoo/engine/ood.py) catch more: this fits the per-layer summary on
each layer of a zoo ResNet (each stage's output averaged over space, and the input of `fc`) and on more projected
dimensions, the shipped ensemble (layer1-3 + `fc`, the largest scaled score) and its variant with each stage's
standard deviation over space beside its mean, each stage's output averaged over a 2 x 2 grid and layer4's whole
map (where the features lie, not only which), each stage's Gram-matrix row sums (texture statistics, Sastry &
Oore 2020) alone and in ensembles, and a k-nearest-neighbour distance on normalised features (Sun et al. 2022);
it thresholds each at the 99th percentile of its validation scores and prints the share flagged on
the sets of bench/ood_measure.py.

    MEDZOO_DATA=PATH/TO/data nice -n 15 python bench/ood_layers.py --ckpt brain_tumor_resnet18_cpu --out /tmp/ood

Nothing here changes the checkpoint; it only measures what another choice would give.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from hydra import initialize_config_module
from omegaconf import OmegaConf
from ood_measure import medmnist_pngs

from medzoo.datasets.dataset import ArrayDataset
from medzoo.engine.inference import Preprocessor, list_inputs
from medzoo.engine.ood import FeatureHook, checkpoint_splits, fit_ensemble, fit_summary
from medzoo.engine.precision import Precision
from medzoo.paths import medzoo_home
from medzoo.recipes import register_recipes
from medzoo.zoo import hub
from medzoo.zoo.factory import model_from_checkpoint

STAGES = ("layer1", "layer2", "layer3", "layer4")
VARIANTS = [("fc", 64), ("fc", 32), ("fc", 128), ("fc", 512), *((stage, 64) for stage in STAGES),
            *((f"{stage}+gram", 64) for stage in STAGES), *((f"{stage}+grid", 64) for stage in STAGES),
            ("layer4+map", 64)]


ENSEMBLE = ("layer1", "layer2", "layer3", "fc")  # the shipped summary's layers (medzoo.zoo.resnet.ResNet.ood_layers)
KNN = [("fc", 1), ("fc", 10), ("fc", 50), ("layer3", 1), ("layer3", 10), ("layer2", 1), ("layer2", 10)]


def pooled(output: torch.Tensor) -> np.ndarray:
    """A stage's output averaged over space, then its standard deviation over space."""
    output = output.float()
    return torch.cat([output.mean((2, 3)), output.std((2, 3))], 1).numpy()


GRAM_ORDERS = (1, 2, 4)
GRID = 2  # `layerN+grid`: a stage's output averaged over each cell of a GRID x GRID grid


def grid_means(output: torch.Tensor, cells: int = GRID) -> np.ndarray:
    """Where the features are, not only which: a stage's output averaged over each cell of a cells x cells grid
    (C x cells^2 values; the input of `fc` and the pooled stages keep no layout at all)."""
    return torch.nn.functional.adaptive_avg_pool2d(output.float(), cells).flatten(1).numpy()


def gram_rows(output: torch.Tensor) -> np.ndarray:
    """Sastry & Oore 2020's texture features of a stage's output: for each order p, the p-th root of the Gram
    matrix of the p-th powers of the channels (averaged over space), summed along its rows: C values an order."""
    flat = output.double().flatten(2).clamp_min(0)  # stage outputs end in a ReLU
    rows = []
    with torch.autocast("cpu", enabled=False):  # the hook runs inside the checkpoint's bf16 autocast
        for p in GRAM_ORDERS:
            powered = flat ** p
            gram = powered @ powered.transpose(1, 2) / flat.shape[2]
            rows.append(gram.clamp_min(0).pow(1 / p).sum(2))
    return torch.cat(rows, 1).float().numpy()


def features_of(model: torch.nn.Module, tensors: list[torch.Tensor], precision: Precision) -> dict[str, np.ndarray]:
    """Pooled stage outputs (`layerN`: mean over space; `layerN+std`: mean and standard deviation) and the input
    of `fc` for `tensors`, in batches of 64."""
    kept: dict[str, list[np.ndarray]] = {stage: [] for stage in STAGES}
    grams: dict[str, list[np.ndarray]] = {stage: [] for stage in STAGES}
    grids: dict[str, list[np.ndarray]] = {stage: [] for stage in STAGES}
    maps: list[np.ndarray] = []

    def keep(stage: str, output: torch.Tensor) -> None:  # a hook that returns something replaces the output
        kept[stage].append(pooled(output))
        grams[stage].append(gram_rows(output))
        grids[stage].append(grid_means(output))
        if stage == "layer4":
            maps.append(output.float().flatten(1).numpy())  # the whole last map (4 x 4 cells at 128 px)

    handles = [getattr(model, stage).register_forward_hook(
        lambda module, inputs, output, stage=stage: keep(stage, output)) for stage in STAGES]
    with torch.no_grad(), FeatureHook(model, "fc") as hook:
        for start in range(0, len(tensors), 64):
            batch = torch.stack(tensors[start:start + 64]).contiguous(memory_format=torch.channels_last)
            with precision.autocast():
                model(batch)
        found = {"fc": hook.take()}
        for stage, arrays in kept.items():
            both = np.concatenate(arrays)
            found[stage], found[f"{stage}+std"] = both[:, :both.shape[1] // 2], both
            found[f"{stage}+gram"] = np.concatenate(grams[stage])
            found[f"{stage}+grid"] = np.concatenate(grids[stage])
        found["layer4+map"] = np.concatenate(maps)
    for handle in handles:
        handle.remove()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default="brain_tumor_resnet18_cpu")
    parser.add_argument("--data", type=Path, default=os.environ.get("MEDZOO_DATA"), required="MEDZOO_DATA" not in os.environ,
                        help="the data folder holding brain-tumor-mri/ (default: $MEDZOO_DATA)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/ood_measure"))
    args = parser.parse_args()
    data, out = args.data.resolve(), args.out.resolve()
    path = hub.resolve(args.ckpt)
    model, card = model_from_checkpoint(path, torch.device("cpu"))
    model = model.to(memory_format=torch.channels_last).eval()
    precision = Precision.resolve(card.precision, torch.device("cpu"))
    register_recipes()
    with initialize_config_module("medzoo.conf", version_base=None):
        overrides = OmegaConf.create({"root": str(data / "brain-tumor-mri")})
        splits, spec = checkpoint_splits(card, overrides, str(medzoo_home() / "cache"), str(path))
    split_tensors = {name: [ArrayDataset(splits.split(name), spec.pipeline("eval"))[i][0]
                            for i in range(len(splits.split(name).labels))] for name in ("train", "val", "test")}
    preprocess = Preprocessor(card, str(path))
    outside = {"BreastMNIST": medmnist_pngs(data / "medmnist" / "breastmnist.npz", out / "breastmnist"),
               "PneumoniaMNIST": medmnist_pngs(data / "medmnist" / "pneumoniamnist.npz", out / "pneumoniamnist"),
               "DICOM slices": data / "volumes" / "dicom" / "SAG-anon-128",
               "NIfTI slices": data / "volumes" / "nifti" / "stroke"}
    sets = {name: features_of(model, tensors, precision) for name, tensors in split_tensors.items()}
    for name, folder in outside.items():
        items = [item for found in list_inputs(folder) for item in preprocess.items(found)]
        sets[name] = features_of(model, [tensor for _, tensor in items], precision)
    shown = ["test", *outside]
    print(f"checkpoint {args.ckpt}; share flagged at the 99th percentile of validation scores\n")
    print("| features | k | Testing | " + " | ".join(shown[1:]) + " |")
    print("|---|---:|" + "---:|" * len(shown))
    labels = np.asarray(splits.train.labels)
    for layer, k in VARIANTS:
        summary = fit_summary(sets["train"][layer], labels, len(card.classes), layer, dims=k)
        summary = summary.calibrated(sets["val"][layer])
        shares = [summary.flags(summary.score(sets[name][layer])).mean() for name in shown]
        print(f"| {layer} | {summary.projection.shape[0]} | " + " | ".join(f"{s:.1%}" for s in shares) + " |")
    for name, layers in (("ensemble (shipped)", ENSEMBLE),
                         ("ensemble, mean + sd", tuple(f"{layer}+std" for layer in ENSEMBLE[:3]) + ("fc",)),
                         ("ensemble, Gram rows", tuple(f"{layer}+gram" for layer in STAGES) + ("fc",)),
                         ("ensemble, shipped + Gram rows", ENSEMBLE + tuple(f"{layer}+gram" for layer in STAGES)),
                         ("ensemble, grid means", tuple(f"{layer}+grid" for layer in STAGES) + ("fc",)),
                         ("ensemble, shipped + grid means", ENSEMBLE + tuple(f"{layer}+grid" for layer in STAGES))):
        ensemble = fit_ensemble({layer: sets["train"][layer] for layer in layers}, labels, len(card.classes))
        ensemble = ensemble.calibrated({layer: sets["val"][layer] for layer in layers})
        shares = [ensemble.flags(ensemble.score({layer: sets[s][layer] for layer in layers})).mean() for s in shown]
        print(f"| {name}: {', '.join(layers)} | 64 | " + " | ".join(f"{s:.1%}" for s in shares) + " |")
    for layer, k in KNN:
        train = normalised(sets["train"][layer])
        threshold = np.percentile(kth_distance(train, normalised(sets["val"][layer]), k), 99)
        shares = [np.mean(kth_distance(train, normalised(sets[s][layer]), k) > threshold) for s in shown]
        print(f"| k-NN distance, {layer}, k = {k} | - | " + " | ".join(f"{s:.1%}" for s in shares) + " |")


def normalised(features: np.ndarray) -> np.ndarray:
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def kth_distance(train: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Each query's distance to its k-th nearest training feature."""
    distances = torch.cdist(torch.as_tensor(queries), torch.as_tensor(train))
    return distances.topk(k, largest=False).values[:, -1].numpy()


if __name__ == "__main__":
    main()

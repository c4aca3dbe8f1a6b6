"""An out-of-distribution score for a classifier's inputs (issue 16): is this input unlike the training data?

The summary follows Lee et al. 2018 ("A simple unified framework for detecting out-of-distribution samples and
adversarial attacks"), feature ensemble included: at each of several layers (the model's `ood_layers`; the zoo's
ResNets: the outputs of layer1-3, averaged over space, and the penultimate features, the input of `fc`; a model
that names none: its final linear layer's input), per-class means and one shared (tied) covariance of the
training features, scored by the smallest class Mahalanobis distance. To keep the card small, each layer's
features are first projected onto their top k principal directions (k = min(64, feature size)); means and
covariance live in that space, and what the projection leaves out is scored against its mean variance per
dimension:

    score(x) = min_c |L^T (P (x - m) - mu_c)|^2  +  |(x - m) - P^T P (x - m)|^2 / residual_variance

(P the k x D projection, m the training mean, L the Cholesky factor of the k x k precision matrix). This is -2
log-likelihood, up to a constant, of a Gaussian per class with tied covariance inside the projection and
isotropic noise outside it (probabilistic PCA). Each layer's score is divided by its own scale, the 99th
percentile of its validation scores, and the input's score is the largest of these ratios: an input is as
unusual as its most unusual layer. Early layers see texture and intensity (a chest X-ray among brain MRI), the
last one what the classifier uses. The threshold is a percentile (99) of the validation inputs' scores, so
about 1 % of in-distribution validation images are flagged. Cards written before the ensemble (method
`mahalanobis_pca`: the penultimate layer alone, scale 1) score as they always did. The summary is stored in the model card's `ood`
field (checked on read by medzoo.zoo.card_schema.check_ood), rounded to `DIGITS` significant digits before the
threshold is computed, so training and `medzoo predict` score with the same numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from medzoo.datasets.arrays import SplitArrays
from medzoo.datasets.dataset import ArrayDataset, DataSplits
from medzoo.engine.precision import Precision
from medzoo.errors import DataError
from medzoo.transforms.spec import TransformSpec
from medzoo.zoo.card import ModelCard
from medzoo.zoo.card_schema import check_ood

log = logging.getLogger(__name__)
METHOD = "mahalanobis_layers"
SINGLE_LAYER_METHOD = "mahalanobis_pca"  # cards written before the ensemble: the penultimate layer, unscaled
PROJECTED_DIMS = 64  # k = min(PROJECTED_DIMS, feature size)
PERCENTILE = 99.0  # of the validation scores: the threshold
MAX_FIT_SAMPLES = 3000  # training samples the summary is fitted on (a seeded subsample beyond this)
DIGITS = 6  # significant digits kept in the card
BATCH = 64


def feature_layer(model: nn.Module) -> str:
    """The name of the final linear layer, whose input is the penultimate feature: the layer the model names as
    its `classifier` (the zoo's ResNets: `fc`) when that is an nn.Linear, else the last nn.Linear registered."""
    modules = dict(model.named_modules())
    named = getattr(model, "classifier", None)
    if isinstance(named, str) and isinstance(modules.get(named), nn.Linear):
        return named
    linear = [name for name, module in modules.items() if isinstance(module, nn.Linear) and name]
    if not linear:
        raise DataError(f"{type(model).__name__} has no nn.Linear layer, so it has no penultimate features to "
                        "summarise; set trainer.ood=false.")
    return linear[-1]


def ood_layers(model: nn.Module) -> tuple[str, ...]:
    """The layers a model's summary is fitted on: those it names as `ood_layers` (the zoo's ResNets: layer1-3
    and `fc`), else its final linear layer alone."""
    named = getattr(model, "ood_layers", None)
    modules = dict(model.named_modules())
    if named and all(isinstance(name, str) and name in modules for name in named):
        return tuple(named)
    return (feature_layer(model),)


class FeatureHook:
    """While active (`with`), keeps one feature vector per sample from `layer` on every forward pass: a linear
    layer's input (the penultimate features, for the classifier), or any other layer's output averaged over its
    spatial axes (a stage of a 2D or 3D network: one value per channel)."""

    def __init__(self, model: nn.Module, layer: str):
        module = dict(model.named_modules()).get(layer) if layer else None
        if module is None or module is model:
            raise DataError(f"the model has no layer '{layer}' to take features from; the checkpoint's card "
                            "and its model disagree.")
        self.module, self.batches, self.layer = module, [], layer

    def __enter__(self) -> FeatureHook:
        if isinstance(self.module, nn.Linear):
            self.handle = self.module.register_forward_pre_hook(self._keep_input)
        else:
            self.handle = self.module.register_forward_hook(self._keep_output)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.handle.remove()

    def _keep_input(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        self.batches.append(inputs[0].detach().float().flatten(1).cpu())

    def _keep_output(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if not isinstance(output, torch.Tensor) or output.ndim < 2:
            raise DataError(f"layer '{self.layer}' does not output a (batch, channels, ...) tensor, so it has no "
                            "features to summarise; the checkpoint's card and its model disagree.")
        output = output.detach().float()
        self.batches.append((output.mean(tuple(range(2, output.ndim))) if output.ndim > 2 else output).cpu())

    def take(self) -> np.ndarray:
        """The features seen since the last call, N x D float64."""
        features = torch.cat(self.batches).numpy().astype(np.float64) if self.batches else np.zeros((0, 0))
        self.batches = []
        return features


def _stored(array: np.ndarray) -> np.ndarray:
    """`array` rounded to DIGITS significant digits, as the card keeps it."""
    return np.array([float(f"{value:.{DIGITS}g}") for value in np.ravel(array)]).reshape(np.shape(array))


@dataclass(frozen=True)
class OODSummary:
    """Per-class means and tied covariance of the training features in a k-dimensional projection."""

    feature_layer: str
    center: np.ndarray  # D: the training features' mean
    projection: np.ndarray  # k x D, orthonormal rows: the top k principal directions
    class_means: np.ndarray  # C x k, in the projection
    precision_cholesky: np.ndarray  # k x k lower-triangular L, precision = L L^T
    residual_variance: float  # mean variance per dimension outside the projection
    threshold: float = float("inf")
    percentile: float = PERCENTILE
    num_fit: int = 0
    num_val: int = 0

    def score(self, features: np.ndarray) -> np.ndarray:
        """The OOD score of each row of `features` (N x D); higher is further from the training data."""
        centred = np.asarray(features, np.float64) - self.center
        projected = centred @ self.projection.T
        residual = ((centred - projected @ self.projection) ** 2).sum(1) / self.residual_variance
        nearest = np.full(len(centred), np.inf)
        for mean in self.class_means:  # a class at a time: N x k, however many classes
            nearest = np.minimum(nearest, (((projected - mean) @ self.precision_cholesky) ** 2).sum(1))
        return nearest + residual

    def flags(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) > self.threshold

    def calibrated(self, features: np.ndarray, percentile: float = PERCENTILE) -> OODSummary:
        """This summary with its threshold at `percentile` of the scores of `features` (the validation split)."""
        threshold = float(np.percentile(self.score(features), percentile))
        return replace(self, threshold=threshold, percentile=float(percentile), num_val=len(features))

    def layer_card(self) -> dict[str, Any]:
        """This layer's part of the card (plain JSON values)."""
        k, dim = self.projection.shape
        return {"feature_layer": self.feature_layer, "k": int(k), "feature_dim": int(dim),
                "center": self.center.tolist(), "projection": self.projection.tolist(),
                "class_means": self.class_means.tolist(), "precision_cholesky": self.precision_cholesky.tolist(),
                "residual_variance": self.residual_variance}

    @classmethod
    def from_layer_card(cls, ood: Mapping[str, Any]) -> OODSummary:
        """From one layer's card entry, which ModelCard has checked (shapes, finite values)."""
        return cls(feature_layer=ood["feature_layer"], center=np.asarray(ood["center"], np.float64),
                   projection=np.asarray(ood["projection"], np.float64),
                   class_means=np.asarray(ood["class_means"], np.float64),
                   precision_cholesky=np.asarray(ood["precision_cholesky"], np.float64),
                   residual_variance=float(ood["residual_variance"]))


@dataclass(frozen=True)
class OODEnsemble:
    """One summary per layer; an input's score is the largest of its layers' scores, each divided by that
    layer's scale (the percentile of its validation scores); flagged above `threshold`."""

    layers: tuple[OODSummary, ...]
    scales: tuple[float, ...]
    threshold: float = float("inf")
    percentile: float = PERCENTILE
    num_fit: int = 0
    num_val: int = 0
    method: str = METHOD

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(layer.feature_layer for layer in self.layers)

    def score(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
        """The OOD score of each input, from its features at every layer (layer name -> N x D)."""
        return np.max([layer.score(features[layer.feature_layer]) / scale
                       for layer, scale in zip(self.layers, self.scales, strict=True)], axis=0)

    def flags(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) > self.threshold

    def calibrated(self, features: Mapping[str, np.ndarray], percentile: float = PERCENTILE) -> OODEnsemble:
        """Scales and threshold at `percentile` of the scores of `features` (the validation split): first each
        layer's scale, then the threshold of the combined score."""
        scales = tuple(_stored(np.array(np.percentile(layer.score(features[layer.feature_layer]), percentile))).item()
                       for layer in self.layers)
        scaled = replace(self, scales=tuple(max(scale, 1e-30) for scale in scales))
        threshold = float(np.percentile(scaled.score(features), percentile))
        return replace(scaled, threshold=threshold, percentile=float(percentile),
                       num_val=len(next(iter(features.values()))))

    def to_card(self) -> dict[str, Any]:
        """The card's `ood` field (plain JSON values)."""
        return {"method": METHOD, "percentile": self.percentile, "threshold": self.threshold,
                "num_fit": self.num_fit, "num_val": self.num_val,
                "layers": [{**layer.layer_card(), "scale": scale} for layer, scale in zip(self.layers, self.scales)]}

    @classmethod
    def from_card(cls, ood: Mapping[str, Any]) -> OODEnsemble:
        """From a card's `ood` field, which ModelCard has checked; an old single-layer card (`mahalanobis_pca`)
        becomes an ensemble of its one layer at scale 1, so it scores and flags exactly as before."""
        common = {"threshold": float(ood["threshold"]), "percentile": float(ood["percentile"]),
                  "num_fit": int(ood.get("num_fit") or 0), "num_val": int(ood.get("num_val") or 0)}
        if ood["method"] == SINGLE_LAYER_METHOD:
            return cls(layers=(OODSummary.from_layer_card(ood),), scales=(1.0,), method=SINGLE_LAYER_METHOD,
                       **common)
        return cls(layers=tuple(OODSummary.from_layer_card(entry) for entry in ood["layers"]),
                   scales=tuple(float(entry["scale"]) for entry in ood["layers"]), **common)


def fit_summary(features: np.ndarray, labels: np.ndarray, num_classes: int, layer: str,
                dims: int = PROJECTED_DIMS) -> OODSummary:
    """Fit the summary on training features (N x D) and their labels; the threshold is left to `calibrated`."""
    features = np.asarray(features, np.float64)
    count, dim = features.shape
    if count < 2:
        raise DataError(f"an OOD summary needs at least 2 training samples, got {count}.")
    center = features.mean(0)
    centred = features - center
    _, singular, directions = np.linalg.svd(centred, full_matrices=False)
    k = min(dims, dim, len(directions))
    projection = _stored(directions[:k])  # rounding leaves the rows orthonormal to about 1e-6
    projected = centred @ projection.T
    means = np.zeros((num_classes, k))
    for label in range(num_classes):
        members = projected[labels == label]
        if len(members):
            means[label] = members.mean(0)
        else:  # no sample of this class in the fit: its mean is the overall one, and the log says so
            log.warning("OOD summary: no training sample of class %d among the %d fitted; its mean is the "
                        "overall mean", label, count)
    within = projected - means[labels]
    covariance = within.T @ within / count
    covariance += np.eye(k) * (1e-6 * np.trace(covariance) / k + 1e-12)  # ridge: a singular direction stays finite
    precision = np.linalg.inv(covariance)
    factor = np.tril(_stored(np.linalg.cholesky((precision + precision.T) / 2)))
    total = float((singular ** 2).sum()) / count
    kept = float((singular[:k] ** 2).sum()) / count
    residual_variance = max((total - kept) / (dim - k), 1e-9 * total / dim, 1e-30) if dim > k else 1.0
    return OODSummary(feature_layer=layer, center=_stored(center), projection=projection,
                      class_means=_stored(means), precision_cholesky=factor,
                      residual_variance=float(_stored(np.array(residual_variance))), num_fit=count)


@torch.no_grad()
def split_features(model: nn.Module, layers: tuple[str, ...], split: SplitArrays, spec: TransformSpec,
                   indices: np.ndarray, precision: Precision, channels_last: bool = False) -> dict[str, np.ndarray]:
    """Features at each of `layers` of `split`'s samples at `indices`, through the eval transforms (no
    augmentation): layer name -> N x D."""
    model.eval()
    device = next(model.parameters()).device
    dataset = ArrayDataset(split, spec.pipeline("eval"))
    hooks = [FeatureHook(model, layer) for layer in layers]
    with ExitStack() as stack:
        for hook in hooks:
            stack.enter_context(hook)
        for start in range(0, len(indices), BATCH):
            batch = torch.stack([dataset[int(i)][0] for i in indices[start:start + BATCH]]).to(device)
            if channels_last and batch.ndim == 4:
                batch = batch.contiguous(memory_format=torch.channels_last)
            with precision.autocast():
                model(batch)
        return {hook.layer: hook.take() for hook in hooks}


def fit_ensemble(features: Mapping[str, np.ndarray], labels: np.ndarray, num_classes: int,
                 dims: int = PROJECTED_DIMS) -> OODEnsemble:
    """One summary per layer of `features` (layer name -> training features N x D); scales and threshold are
    left to `OODEnsemble.calibrated`."""
    layers = tuple(fit_summary(values, labels, num_classes, layer, dims) for layer, values in features.items())
    return OODEnsemble(layers=layers, scales=(1.0,) * len(layers), num_fit=len(labels))


def summarise(model: nn.Module, splits: DataSplits, spec: TransformSpec, precision: Precision,
              channels_last: bool = False, seed: int = 0) -> OODEnsemble:
    """The summary of `model` on `splits`: fitted on at most MAX_FIT_SAMPLES training samples (seeded subsample),
    scaled and thresholded on the validation split (the training subsample when there is no validation split)."""
    layers = ood_layers(model)
    total = len(splits.train.labels)
    chosen = np.sort(np.random.default_rng(seed).choice(total, min(total, MAX_FIT_SAMPLES), replace=False))
    train = split_features(model, layers, splits.train, spec, chosen, precision, channels_last)
    summary = fit_ensemble(train, np.asarray(splits.train.labels)[chosen], len(splits.classes))
    if len(splits.val.labels):
        summary = summary.calibrated(split_features(model, layers, splits.val, spec,
                                                    np.arange(len(splits.val.labels)), precision, channels_last))
    else:
        log.warning("OOD summary: no validation split; the threshold comes from the training samples it was fitted on")
        summary = replace(summary.calibrated(train), num_val=0)
    log.info("OOD summary: %d training samples, features of %s (%s) projected to %s dimensions; threshold %.3f "
             "= %g th percentile of %d validation scores", summary.num_fit, ", ".join(layers),
             ", ".join(str(train[layer].shape[1]) for layer in layers),
             ", ".join(str(layer.projection.shape[0]) for layer in summary.layers), summary.threshold,
             summary.percentile, summary.num_val)
    return summary


def summarise_or_warn(model: nn.Module, splits: DataSplits, spec: TransformSpec, precision: Precision,
                      channels_last: bool = False, seed: int = 0) -> dict[str, Any] | None:
    """`summarise` in card form, or None with a warning when it cannot be fitted (a finished training run keeps
    its checkpoint either way)."""
    try:
        return check_ood(summarise(model, splits, spec, precision, channels_last, seed).to_card(),
                         len(splits.classes), "the OOD summary")
    except (DataError, np.linalg.LinAlgError, ValueError) as exc:
        log.warning("no OOD summary stored in the checkpoint: %s", exc)
        return None


def checkpoint_splits(card: ModelCard, data_overrides: Mapping[str, Any], cache_dir: str,
                      where: str = "checkpoint") -> tuple[DataSplits, TransformSpec]:
    """The splits a checkpoint was trained on (installed data configs and the card's data settings, as `medzoo
    eval` reads them), through its own preprocessing."""
    from hydra.utils import instantiate

    from medzoo.engine.checkpoint_metrics import data_config

    spec = TransformSpec.from_card_steps(card.preprocessing.backend, card.preprocessing.pre,
                                         card.preprocessing.eval, where)
    splits = instantiate(data_config(card, data_overrides, cache_dir, where), _convert_="all").load(
        spec.preprocess, spec.pre_spec)
    if list(splits.classes) != list(card.classes) or splits.in_chans != card.in_chans:
        raise DataError(f"the data ({splits.classes}, {splits.in_chans} channel(s)) is not what {where} was trained "
                        f"on ({list(card.classes)}, {card.in_chans}); point data.root at that dataset.")
    return splits, spec


def checkpoint_summary(model: nn.Module, card: ModelCard, data_overrides: Mapping[str, Any], cache_dir: str,
                       device: torch.device, where: str = "checkpoint") -> dict[str, Any]:
    """The card form of the summary of a trained checkpoint, from the data it was trained on: no retraining."""
    splits, spec = checkpoint_splits(card, data_overrides, cache_dir, where)
    channels_last = card.channels_last
    model = model.to(memory_format=torch.channels_last) if channels_last else model
    summary = summarise(model, splits, spec, Precision.resolve(card.precision, device), channels_last)
    return check_ood(summary.to_card(), card.num_classes, where)


class OODScorer:
    """`medzoo predict`'s scores: `with scorer.watch(count):` around the forward pass over `count` samples, then
    `take()` gives each sample's (score, flagged); (None, None) for each when the checkpoint carries no summary."""

    def __init__(self, model: nn.Module, card: ModelCard, source: str = "checkpoint"):
        self.summary = OODEnsemble.from_card(card.ood) if card.ood is not None else None
        self.hooks, self.count, self.source = [], 0, source
        if self.summary is None:
            log.info("%s carries no OOD summary: ood_score and ood are null (add one: medzoo zoo ood ckpt=...)",
                     source)
            return
        modules = dict(model.named_modules())
        for layer in self.summary.layers:
            name, dim = layer.feature_layer, layer.center.shape[0]
            module = modules.get(name)
            if module is None or module is model or (isinstance(module, nn.Linear) and module.in_features != dim):
                raise DataError(f"{source}: card field 'ood' names layer {name!r}, which is not a layer of the model "
                                f"giving {dim} features; the checkpoint is damaged or was edited by hand. Use the "
                                "file as medzoo wrote it.")
            self.hooks.append(FeatureHook(model, name))

    @contextmanager
    def watch(self, count: int):
        """Capture the features of one forward pass over `count` samples."""
        self.count = count
        with ExitStack() as stack:
            for hook in self.hooks:
                stack.enter_context(hook)
            yield

    def take(self) -> list[tuple[float | None, bool | None]]:
        if self.summary is None:
            return [(None, None)] * self.count
        features = {hook.layer: hook.take() for hook in self.hooks}
        for layer in self.summary.layers:
            found = features[layer.feature_layer]
            if found.shape != (self.count, layer.center.shape[0]):  # a layer run twice per forward, or resized
                raise DataError(f"{self.source}: layer '{layer.feature_layer}' gave features of shape {found.shape} "
                                f"for {self.count} inputs, not {layer.center.shape[0]} per input as card field 'ood' "
                                "says; the OOD summary cannot score this model's inputs.")
        scores = self.summary.score(features)
        return [(float(s), bool(f)) for s, f in zip(scores, self.summary.flags(scores))]

"""Image features for the label-error search: a zoo checkpoint's pooled activations, or label-blind statistics
(gradient-orientation histograms, downsampled pixels) of the thumbnails the audit already decoded."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from medzoo.audit.settings import AuditSettings
from medzoo.datasets.folder_scan import FileRecord
from medzoo.datasets.images import decode_image, to_channels
from medzoo.errors import ConfigError, DataError, MedzooError
from medzoo.progress import progress
from medzoo.transforms.layout import to_channel_first
from medzoo.transforms.spec import TransformSpec
from medzoo.zoo import hub
from medzoo.zoo.card import ModelCard
from medzoo.zoo.factory import model_from_checkpoint

HOG_CELL = 8  # pixels per cell side on the audit's thumbnail (64 px: an 8 x 8 grid of cells)
HOG_BINS = 9  # unsigned gradient orientations per cell, as in Dalal and Triggs
PIXEL_SIDE = 32  # side of the downsampled thumbnail used as raw pixel features


@dataclass
class Features:
    """One feature row per image, and where the columns come from."""

    values: np.ndarray  # (N, D) float32
    source: str  # "checkpoint brain_tumor_resnet18_cpu [layer3, layer4]", "hog", "pixels"
    checkpoints: list[dict[str, Any]] = field(default_factory=list)  # name, trained-on data, layers, dims


def thumbnail_features(thumbs: np.ndarray, kind: str, side: int) -> Features:
    """`hog` or `pixels` features of the audit's (N, side*side) zero-mean, unit-norm grayscale thumbnails."""
    images = thumbs.reshape(len(thumbs), side, side).astype(np.float32)
    if kind == "hog":
        return Features(orientation_histograms(images, HOG_CELL, HOG_BINS), "hog")
    step = max(side // PIXEL_SIDE, 1)
    cut = side // step * step
    pooled = images[:, :cut, :cut].reshape(len(images), cut // step, step, cut // step, step).mean((2, 4))
    return Features(pooled.reshape(len(images), -1), "pixels")


def orientation_histograms(images: np.ndarray, cell: int, bins: int) -> np.ndarray:
    """HOG-like features of (N, H, W) images: per cell, the gradient magnitude summed per unsigned orientation
    bin, each cell's histogram scaled to unit length (so contrast does not dominate)."""
    gy, gx = np.gradient(images, axis=(1, 2))
    magnitude = np.hypot(gx, gy)
    angle = np.mod(np.arctan2(gy, gx), np.pi)
    which = np.minimum((angle * (bins / np.pi)).astype(np.int64), bins - 1)
    n, height, width = images.shape
    rows, cols = height // cell, width // cell
    out = np.zeros((n, rows, cols, bins), np.float32)
    for b in range(bins):
        part = np.where(which == b, magnitude, 0.0)[:, :rows * cell, :cols * cell]
        out[..., b] = part.reshape(n, rows, cell, cols, cell).sum((2, 4))
    out /= np.linalg.norm(out, axis=-1, keepdims=True) + 1e-6
    return out.reshape(n, -1)


def checkpoint_features(records: Sequence[FileRecord], settings: AuditSettings) -> Features:
    """The pooled outputs of `audit.label_layers` of every checkpoint in `audit.label_checkpoints`, side by side,
    each image prepared with that checkpoint's own preprocessing (as `medzoo predict` does)."""
    parts, described = [], []
    for ref in settings.label_checkpoints:
        model, card = _load(ref)
        values = _activations(model, card, ref, records, settings)
        parts.append(values)
        described.append({"checkpoint": ref, "arch": card.arch, "trained_on": card.provenance.data_name,
                          "classes": list(card.classes), "layers": list(settings.label_layers),
                          "dims": int(values.shape[1])})
    layers = ", ".join(settings.label_layers)
    return Features(np.concatenate(parts, axis=1),
                    f"checkpoint {' + '.join(settings.label_checkpoints)} [{layers}]", described)


def check_checkpoints(settings: AuditSettings) -> None:
    """Load each of `audit.label_checkpoints` and check `audit.label_layers` against it, so that a wrong name ends
    the audit before the data is scanned rather than after (a ConfigError naming the setting)."""
    for ref in settings.label_checkpoints:
        model, card = _load(ref)
        _check_layers(model, card, ref, settings)


def _check_layers(model: torch.nn.Module, card: ModelCard, ref: str, settings: AuditSettings) -> None:
    modules = dict(model.named_modules())
    missing = [name for name in settings.label_layers if name not in modules]
    if missing:
        top = [name for name, _ in model.named_children()]
        raise ConfigError(f"audit.label_layers: {missing} are not modules of '{ref}' ({card.arch}); its top-level "
                          f"modules are {top}.")


def _load(ref: str) -> tuple[torch.nn.Module, ModelCard]:
    try:
        model, card = model_from_checkpoint(hub.resolve(ref))
    except (MedzooError, KeyError) as exc:
        raise ConfigError(f"audit.label_checkpoints: cannot load '{ref}' ({exc}). Name a published checkpoint "
                          "(`medzoo zoo list`) or a medzoo .safetensors file, or set audit.label_features=hog.") from exc
    if card.spatial_dims != 2 or card.input.layout != "image":
        raise ConfigError(f"audit.label_checkpoints: '{ref}' is a {card.spatial_dims}D '{card.input.layout}' model; "
                          "the audit reads 2D image files, so name a 2D image checkpoint.")
    return model, card


def _activations(model: torch.nn.Module, card: ModelCard, ref: str, records: Sequence[FileRecord],
                 settings: AuditSettings) -> np.ndarray:
    _check_layers(model, card, ref, settings)
    modules = dict(model.named_modules())
    steps = card.preprocessing
    spec = TransformSpec.from_card_steps(steps.backend, steps.pre, steps.eval, ref)
    pipeline = spec.pipeline("eval")

    def prepare(record: FileRecord) -> np.ndarray | None:
        try:
            pixels = to_channels(decode_image(record.path).pixels, card.in_chans)
        except DataError:  # counted by the caller (its row stays NaN)
            return None
        return pipeline(spec.preprocess(to_channel_first(pixels)))

    caught: dict[str, torch.Tensor] = {}
    hooks = [modules[name].register_forward_hook(lambda _m, _i, out, name=name: caught.__setitem__(name, out))
             for name in settings.label_layers]
    vectors: list[np.ndarray | None] = []
    try:
        batch_size = settings.label_batch_size
        starts = progress(range(0, len(records), batch_size), len(records), f"audit features {ref}", "images",
                          settings.progress, size=lambda start: min(batch_size, len(records) - start))
        with ThreadPoolExecutor(max_workers=settings.workers) as pool, torch.inference_mode():
            for start in starts:
                prepared = list(pool.map(prepare, records[start:start + settings.label_batch_size]))
                ok = [x for x in prepared if x is not None]
                if not ok:
                    vectors += prepared
                    continue
                try:
                    batch = torch.from_numpy(np.stack(ok))
                except ValueError as exc:  # np.stack: the checkpoint's preprocessing left sizes unequal
                    raise DataError(f"'{ref}': its preprocessing gives images of different sizes ({exc}); use a "
                                    "checkpoint whose preprocessing resizes to one size.") from exc
                caught.clear()
                model(batch.float())
                pooled = iter(np.concatenate([_pooled(caught[name]) for name in settings.label_layers], axis=1))
                vectors += [None if x is None else next(pooled) for x in prepared]
    finally:
        for hook in hooks:
            hook.remove()
    width = next((len(v) for v in vectors if v is not None), 0)
    # A file the checkpoint's decoder refuses keeps a NaN row; the caller leaves it out and counts it.
    out = np.full((len(vectors), width), np.nan, np.float32)
    for row, vector in enumerate(vectors):
        if vector is not None:
            out[row] = vector
    return out


def _pooled(output: torch.Tensor) -> np.ndarray:
    """A module's output as one vector per image: global average pooling over its spatial axes, if any."""
    output = output.float()
    return (output.flatten(2).mean(2) if output.ndim > 2 else output).numpy()

"""Inference with a checkpoint's own preprocessing: files, volumes and DICOM series in, probabilities out."""

from __future__ import annotations

import collections.abc
import csv
import re
import types
import typing
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medzoo.datasets.images import IMAGE_EXTENSIONS, decode_image, to_channels
from medzoo.datasets.readers.registry import (
    DICOM_SUFFIXES,
    READERS,
    is_dicom_series,
    max_array_bytes,
    volume_suffixes,
)
from medzoo.errors import DataError
from medzoo.transforms.layout import canonical_layout, to_channel_first
from medzoo.transforms.spec import TransformSpec
from medzoo.zoo.card import ModelCard

SLICE_NAME = re.compile(r"(?P<volume>.+)#slice\d{3,}")  # how `Preprocessor.items` names a volume's 2D slices


def _is_volume(path: Path) -> bool:
    """A volume file; DICOM files count through their series folder, not one by one."""
    suffix = path.suffix.lower()
    return (path.name.lower().endswith(volume_suffixes()) and suffix not in _image_suffixes()
            and suffix not in DICOM_SUFFIXES)


def _image_suffixes() -> frozenset[str]:
    """2D image files: what image folders decode (TIFF included) and what the `image` reader claims."""
    return IMAGE_EXTENSIONS | frozenset(READERS["image"].suffixes)


def list_inputs(inputs: str | Path | Sequence[str | Path]) -> list[Path]:
    """Inputs below `inputs` (one path, or a list: `inputs=[a.jpg,b.jpg]`, or plain file arguments): image files,
    volume files (NIfTI, NumPy, TIFF) and DICOM series folders."""
    if not isinstance(inputs, (str, Path)):
        if not inputs:
            raise DataError("inputs=[] names no file. Set inputs=FILE_OR_DIR or pass files as plain arguments.")
        return [found for entry in inputs for found in list_inputs(str(entry))]
    path = Path(inputs).expanduser()
    if path.is_file() or is_dicom_series(path):
        return [path]
    if not path.is_dir():
        raise DataError(f"inputs not found: {path}. Set inputs=FILE_OR_DIR (an image, a volume, a DICOM folder).")
    found = [p for p in sorted(path.rglob("*"))
             if (p.is_file() and (p.suffix.lower() in _image_suffixes() or _is_volume(p))) or is_dicom_series(p)]
    if not found:
        raise DataError(f"nothing to predict under {path}: no images ({', '.join(sorted(_image_suffixes()))}), "
                        f"volumes ({', '.join(volume_suffixes())}) or DICOM series folders. Set inputs=FILE_OR_DIR.")
    return found


def _to_uint8(volume: np.ndarray) -> np.ndarray:
    """Scale a volume's intensities to 0..255 (robust 0.5-99.5 % window), as 2D image models expect."""
    low, high = np.percentile(volume, [0.5, 99.5])
    scaled = (volume.astype(np.float32) - low) * (255.0 / max(float(high - low), 1e-6))
    return np.clip(scaled, 0, 255).astype(np.uint8)


@dataclass
class Preprocessor:
    """The `pre` and `eval` steps a checkpoint's card describes, applied the way the model was trained, and its
    input spec (how a volume or DICOM series is laid out for the model)."""

    card: ModelCard
    source: str = "checkpoint"  # the file the card came from, for messages

    def __post_init__(self) -> None:
        steps = self.card.preprocessing
        self.spec = TransformSpec.from_card_steps(steps.backend, steps.pre, steps.eval, self.source)
        self.pipeline = self.spec.pipeline("eval")

    def array(self, image: np.ndarray) -> torch.Tensor:
        """One channel-first array, as stored in the model's cache -> the model's float32 input."""
        return torch.from_numpy(self.pipeline(self.spec.preprocess(image)))  # a failure: DataError (CardSteps)

    def image(self, pixels: np.ndarray) -> torch.Tensor:
        """An H x W x C uint8 image -> the model's input."""
        return self.array(to_channel_first(to_channels(pixels, self.card.in_chans)))

    def file(self, path: Path) -> torch.Tensor:
        """Decode a 2D image file and preprocess it."""
        return self.image(decode_image(path).pixels)

    def items(self, path: str | Path) -> list[tuple[str, torch.Tensor]]:
        """(name, model input) pairs for one input: an image, or a volume / DICOM series as the model
        expects it (3D model: the volume; 2.5D model: slices as channels; 2D model: one item per slice)."""
        path = Path(path)
        if path.is_file() and path.suffix.lower() in _image_suffixes():
            return [(str(path), self.file(path))]
        from medzoo.datasets.readers import read_volume

        spec = self.card.input
        volume = read_volume(path, spec.reader, **reader_options(spec.reader, spec.reader_options, self.source, path)).array
        if volume.ndim == 3:  # a 2D multichannel stack (C, H, W)
            return [(str(path), self.array(volume))]
        if self.card.spatial_dims == 3 or spec.layout == "slices":  # laid out as `medzoo prepare` lays it out
            layout = "volume" if self.card.spatial_dims == 3 else "slices"
            stack = canonical_layout(volume, layout, path, self.card.in_chans, spec.depth_mode or "resample")
            return [(str(path), self.array(stack))]
        slices = _to_uint8(volume)
        items, held = [], 0
        for index in range(slices.shape[1]):  # a few bytes a slice on disk can each become a full-size input
            items.append((f"{path}#slice{index:03d}", self.image(np.moveaxis(slices[:, index], 0, -1))))
            held = check_held(held + tensor_bytes(items[-1][1]), items[-1][0])
        return items


def tensor_bytes(tensor: torch.Tensor) -> int:
    return tensor.element_size() * tensor.nelement()


def check_held(held: int, name: str) -> int:
    """`held`, the bytes of the model inputs prediction holds at once, or a DataError naming the input at which
    they pass the readers' memory cap (`max_array_bytes`)."""
    limit, setting = max_array_bytes()
    if held > limit:
        raise DataError(f"{name}: the model inputs made so far take {held:,} bytes, more than the {limit:,} bytes "
                        f"limit ({setting}); prediction holds its inputs in memory, so give fewer inputs or slices "
                        "at a time.")
    return held


def reader_options(reader: str, options: dict, source: str, path: Path) -> dict:
    """A card's reader options, accepted only where they are keyword arguments of the reader that reads `path`."""
    import inspect

    from medzoo.datasets.readers import READERS
    from medzoo.datasets.readers.registry import reader_for

    if not options:
        return {}
    reader = reader_for(path).name if reader == "auto" else reader
    if reader not in READERS:
        raise DataError(f"{source}: the card's reader options name no known reader ({reader!r}); refused.")
    accepted = inspect.signature(READERS[reader].load()).parameters
    unknown = sorted(set(options) - set(accepted) - {"path"})
    if unknown or "path" in options:
        raise DataError(f"{source}: the card's reader options {unknown or ['path']} are not options of the "
                        f"'{reader}' reader; refused.")
    hints = typing.get_type_hints(READERS[reader].load())
    for name, value in options.items():
        if not _fits_hint(value, hints.get(name)):
            hint = getattr(hints.get(name), "__name__", None) or str(hints.get(name)).replace("collections.abc.", "")
            raise DataError(f"{source}: the card's reader option {name}={value!r:.80} is not of type {hint}, as the "
                            f"'{reader}' reader takes it; the card was edited. Fix or remove input.reader_options.")
    return dict(options)


def _fits_hint(value: Any, hint: Any) -> bool:
    """Whether a value read from a card has the type a reader's annotation `hint` states (plain types, unions
    and short sequences of numbers; any other annotation is not an option a card may set)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(_fits_hint(value, arg) for arg in typing.get_args(hint))
    if hint is type(None) or hint is bool or hint is str:
        return isinstance(value, hint)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if typing.get_origin(hint) is collections.abc.Sequence:
        return (isinstance(value, list) and 0 < len(value) <= 4
                and all(_fits_hint(item, typing.get_args(hint)[0]) for item in value))
    return False


@torch.no_grad()
def probabilities(model: torch.nn.Module, batch: torch.Tensor, autocast) -> np.ndarray:
    """Softmax probabilities of `model` for a batch on the model's device."""
    device = next(model.parameters()).device
    with autocast():
        return torch.softmax(model(batch.to(device)).float(), dim=1).cpu().numpy()


def volume_summaries(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per volume that a 2D model saw slice by slice (rows named PATH#sliceNNN): its majority prediction
    and that prediction's share of the slices, and the share of slices flagged out of distribution, with `ood`
    true when most slices are flagged (both null when the checkpoint carries no OOD summary)."""
    volumes: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        match = SLICE_NAME.fullmatch(row["path"])
        if match:
            volumes.setdefault(match["volume"], []).append(row)
    summaries = []
    for path, slices in volumes.items():
        (prediction, votes), = Counter(row["prediction"] for row in slices).most_common(1)
        flags = [row.get("ood") for row in slices]
        share = None if None in flags else sum(flags) / len(flags)
        summaries.append({"path": path, "prediction": prediction, "slices": len(slices),
                          "prediction_share": votes / len(slices), "ood_share": share,
                          "ood": None if share is None else share > 0.5})
    return summaries


def write_volume_summaries(path: Path, summaries: list[dict[str, Any]]) -> None:
    """volumes.csv: one row per volume predicted slice by slice (see `volume_summaries`)."""
    columns = ["path", "prediction", "slices", "prediction_share", "ood_share", "ood"]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows([csv_value(summary[key]) for key in columns] for summary in summaries)


def csv_value(value: Any) -> str:
    """A CSV cell: numbers with 6 decimals, true/false as in JSON, empty for null."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:.6f}" if isinstance(value, float) else str(value)

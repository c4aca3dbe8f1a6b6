"""MedMNIST `.npz` files (2D grey or RGB, 3D) with their official train / val / test splits.

Any file in the MedMNIST format reads with no settings: `layout: auto` picks 2D images or 3D volumes from the
array shapes, and the classes come from the labels (their names from `FILE.json` beside the file, or the official
names of a known set). Multi-label sets (ChestMNIST: one 0/1 column per finding) are refused with the reason.
The file itself is read by `read_medmnist`, the `medmnist` entry of `READERS` (datasets/readers/medmnist_file.py),
imported here so that `from medzoo.datasets.medmnist import read_medmnist` keeps working.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path

import numpy as np

from medzoo.datasets.arrays import SplitArrays
from medzoo.datasets.dataset import DataSplits
from medzoo.datasets.fetch import default_data_home as data_home
from medzoo.datasets.readers.medmnist_file import SINGLE_LABEL, read_medmnist
from medzoo.errors import ConfigError, DataError
from medzoo.transforms.layout import depth_to_channels

log = logging.getLogger(__name__)

BUILTIN_PREFIX = "builtin:"
LAYOUTS = ("auto", "image", "volume", "slices")
# The official label names and task of every MedMNIST v2 set (package data, from MedMNIST's info.py), the names
# written as medzoo's class names; a file named after a set, with or without a size suffix (pneumoniamnist_64.npz),
# gets them.
KNOWN_SETS = "medmnist_sets.json"
SIZE_SUFFIX = re.compile(r"_(28|64|128|224)$")
INFO_MAX_BYTES = 1 << 20  # an info file is a few hundred bytes; anything far larger is not one


def resolve_npz(path: str) -> Path:
    """`builtin:NAME` names a file shipped with medzoo; anything else is a filesystem path."""
    if path.startswith(BUILTIN_PREFIX):
        return Path(str(resources.files("medzoo.datasets") / "builtin" / f"{path[len(BUILTIN_PREFIX):]}.npz"))
    return Path(path).expanduser()


def find_npz(setting: str) -> Path:
    """data.path as given; a bare set name (`pneumoniamnist`, `pneumoniamnist.npz`) that is no file here is looked
    for in `$MEDZOO_DATA/medmnist/`."""
    path = resolve_npz(setting)
    if path.is_file() or setting.startswith(BUILTIN_PREFIX) or path.parent != Path("."):
        return path
    candidate = data_home() / "medmnist" / (path.name if path.suffix == ".npz" else f"{path.name}.npz")
    if candidate.is_file():
        return candidate
    raise DataError(f"data.path={setting}: no such file here, nor {candidate}. Set data.path to a MedMNIST .npz "
                    f"file, or MEDZOO_DATA to the folder holding medmnist/{candidate.name}.")


def guess_layout(shape: tuple[int, ...]) -> str:
    """`image` for N x H x W (grey) and N x H x W x 3 (RGB) arrays, `volume` for N x D x H x W."""
    return "image" if len(shape) == 3 or (len(shape) == 4 and shape[-1] in (1, 3)) else "volume"


@functools.cache
def known_sets() -> dict[str, dict]:
    """{set name: {"task", "classes"}} for the official MedMNIST sets."""
    return json.loads((resources.files("medzoo.datasets") / KNOWN_SETS).read_text(encoding="utf-8"))["sets"]


def known_set(path: Path) -> dict | None:
    """The official entry of the set the file at `path` is named after, or None."""
    return known_sets().get(SIZE_SUFFIX.sub("", path.stem.lower()))


def info_file(path: Path) -> Path | None:
    """The info file beside `path`: FILE.json, else FILE.npz.json."""
    for candidate in (path.with_suffix(".json"), path.with_name(path.name + ".json")):
        if candidate.is_file():
            return candidate
    return None


def read_info(path: Path) -> tuple[list[str] | None, str | None]:
    """(class names, task) from an info file: MedMNIST's own entry (`label: {"0": NAME, ...}`, `task`) or
    `classes: [NAME, ...]`. Plain JSON, read as data."""
    try:
        if path.stat().st_size > INFO_MAX_BYTES:
            raise DataError(f"{path}: {path.stat().st_size} bytes, too large for a MedMNIST info file.")
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise DataError(f"{path}: cannot read the info file ({exc}).") from exc
    if not isinstance(info, dict):
        raise DataError(f"{path}: a JSON object expected, with `label` ({{\"0\": NAME, ...}}) or `classes`.")
    task = info.get("task")
    names = info.get("classes")
    if names is None and isinstance(info.get("label"), dict):
        label = info["label"]
        names = [label.get(str(i)) for i in range(len(label))]
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) and n for n in names)):
        raise DataError(f"{path}: class names must be a list of names, or `label` a map from \"0\", \"1\", ... "
                        "to names (every index from 0).")
    return names, task if isinstance(task, str) else None


def class_names(path: Path, labels: Sequence[np.ndarray],
                configured: Sequence[str] | None) -> tuple[list[str], str, str]:
    """(names, where they came from, task). Names from data.classes, the info file, a known set, else 0..K-1 from
    the labels; labels past the names, or fewer than two classes, are errors. The task is the info file's, else the
    known set's, else binary-class or multi-class by the class count (an ordinal task, RetinaMNIST's, trains as
    multi-class)."""
    top = max(int(split.max(initial=0)) for split in labels)
    info = info_file(path)
    names, task = read_info(info) if info else (None, None)
    if task and "multi-label" in task:
        raise DataError(f"{path}: multi-label MedMNIST sets are not supported ({info} gives task {task!r}); "
                        f"medzoo trains single-label sets: {SINGLE_LABEL}.")
    if configured:
        names, origin = list(configured), "data.classes"
    elif names is not None:
        origin = str(info)
    elif (known := known_set(path)) is not None and top < len(known["classes"]):
        names, origin, task = list(known["classes"]), f"the official names of {path.stem}", task or known["task"]
    else:
        names, origin = [str(i) for i in range(top + 1)], "the labels"
    if top >= len(names):
        raise DataError(f"{path}: label {top} is out of range: {origin} names {len(names)} classes "
                        f"(0..{len(names) - 1}).")
    if len(names) < 2 or len(set(names)) != len(names):
        raise DataError(f"{path}: {origin} gives classes {names}; two or more distinct classes expected.")
    return names, origin, task or ("binary-class" if len(names) == 2 else "multi-class")


class MedMNISTSource:
    """A MedMNIST file as 2D images (C x H x W), 3D volumes (1 x D x H x W) or 2.5D slice stacks (D x H x W).

    `path` is a file, a bare set name under `$MEDZOO_DATA/medmnist/`, `builtin:NAME`, or null for
    `$MEDZOO_DATA/medmnist/<file>`. `classes` null: from the file (see `class_names`); `layout` auto: from the
    array shapes (`guess_layout`).
    """

    def __init__(self, name: str | None = None, classes: Sequence[str] | None = None, path: str | None = None,
                 file: str | None = None, layout: str = "auto", channels: int | None = None,
                 depth_mode: str = "resample"):
        if layout not in LAYOUTS:
            raise ConfigError(f"data.layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
        if not path and not file and not name:
            raise ConfigError("data.path is not set: name a MedMNIST file, data.path=FILE.npz, or a set under "
                              "$MEDZOO_DATA/medmnist/, data.path=pneumoniamnist.")
        self.name, self.path, self.file = name, path, file or (f"{name}.npz" if name else None)
        self.class_names = list(classes) if classes else None
        self.layout, self.channels, self.depth_mode = layout, channels, depth_mode
        self.spatial_dims = 3 if layout == "volume" else 2  # layout auto: set by `load` from the file

    def resolve(self) -> Path:
        """The .npz file: data.path, else `$MEDZOO_DATA/medmnist/<data.file>`."""
        if self.path:
            return find_npz(str(self.path))
        candidate = data_home() / "medmnist" / self.file
        if not candidate.is_file():
            raise DataError(f"{self.file} not found: data.path is not set and {candidate} does not exist. Set "
                            f"data.path=PATH/TO/{self.file}, or MEDZOO_DATA to a folder holding medmnist/{self.file}.")
        return candidate

    def load(self, preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
             preprocess_spec: str = "") -> DataSplits:
        """Read the three official splits into channel-first uint8 arrays."""
        path = self.resolve()
        arrays = read_medmnist(path)
        classes, origin, task = class_names(path, [labels for _, labels in arrays.values()], self.class_names)
        shape = arrays["train"][0].shape
        layout = guess_layout(shape) if self.layout == "auto" else self.layout
        self.spatial_dims = 3 if layout == "volume" else 2
        splits = {}
        for split, (images, labels) in arrays.items():
            images = self._channel_first(images, path, layout)
            if preprocess is not None:
                images = np.stack([preprocess(image) for image in images])
            keys = [f"{split}/{i}" for i in range(len(labels))]
            splits[split] = SplitArrays(np.ascontiguousarray(images), labels, keys)
        log.info("%s: %s %s, layout %s, %d classes (%s), names from %s", path.name, "x".join(map(str, shape[1:])),
                 arrays["train"][0].dtype, layout, len(classes), task, origin)
        fingerprint = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
        return DataSplits(**splits, classes=classes, spatial_dims=self.spatial_dims, fingerprint=fingerprint,
                          report={"source": str(path), "layout": layout, "task": task, "classes_from": origin})

    def _channel_first(self, images: np.ndarray, path: Path, layout: str) -> np.ndarray:
        if layout in ("volume", "slices"):
            if images.ndim != 4:
                raise DataError(f"{path}: 3D MedMNIST images must be N x D x H x W, got {images.shape}; "
                                "use data.layout=image for 2D files.")
            if layout == "volume":
                return images[:, None]
            return np.stack([depth_to_channels(v[None], self.channels, self.depth_mode) for v in images])
        if images.ndim == 3:
            return images[:, None]
        if images.ndim == 4:
            return np.moveaxis(images, -1, 1)
        raise DataError(f"{path}: 2D MedMNIST images must be N x H x W or N x H x W x C, got {images.shape}.")

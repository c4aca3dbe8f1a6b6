"""Several labelled 2D sources in one DataSplits: one class vocabulary, each sample's source and patient kept,
validation carved group-aware, per-source validation and test splits for per-source metrics.

Keys are `SOURCE:relative/path`, so a sample's source is the text before the first colon (`source_of`).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold

from medzoo.datasets.arrays import DecodeReport, SplitArrays
from medzoo.datasets.cache import load_or_build
from medzoo.datasets.csv_table import read_csv_rows
from medzoo.datasets.dataset import DataSplits
from medzoo.datasets.folder_scan import LISTED, FileRecord
from medzoo.datasets.image_folder import ImageFolderSource
from medzoo.datasets.roots import resolve_root
from medzoo.datasets.splits import subset
from medzoo.errors import ConfigError, DataError

log = logging.getLogger(__name__)
BALANCE = (None, "source_class", "class_source")


def _outside(path: Path, resolved_root: Path) -> str | None:
    """Why `path`, named by a slice list, leads out of the data root, or None when it stays inside."""
    try:
        target = path.resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # a NUL byte, a symbolic-link loop
        return f"does not resolve ({type(exc).__name__})"
    if not target.is_relative_to(resolved_root):
        return "leads out of it (an absolute path, '..' or a symbolic link)"
    return None


def source_of(key: str) -> str:
    """The source name of a multi-source sample key (`SOURCE:path`)."""
    return key.split(":", 1)[0]


class SlicesCsvSource:
    """Slices listed in a CSV (`file`, `class`, `patient`, optional `sequence`): TCGA-LGG's `slices.csv`.

    It has no official test split: `test_fraction` of its patients (whole patients) is held out as its test.
    """

    def __init__(self, root: str | None = None, folder: str = "tcga-lgg-slices", csv_name: str = "slices.csv",
                 class_map: Mapping[str, str] | None = None, sequences: Sequence[str] | None = None,
                 test_fraction: float = 0.0, split_seed: int = 0, marker: str = "flair"):
        if not 0 <= test_fraction < 1:
            raise ConfigError(f"test_fraction of a slices source must be in [0, 1), not {test_fraction}")
        self.root, self.folder, self.csv_name = root, folder, csv_name
        self.class_map, self.sequences = dict(class_map or {}), list(sequences) if sequences else None
        self.test_fraction, self.split_seed, self.marker = test_fraction, split_seed, marker

    def rows(self) -> tuple[Path, list[dict]]:
        """The data root and the CSV rows kept (by sequence), each with its vocabulary class in `class`."""
        root = resolve_root(self.root, self.folder, self.marker)
        path = root / self.csv_name
        if not path.is_file():
            raise DataError(f"slice list not found: {path}. Point the source's root at the folder that holds "
                            f"{self.csv_name} (data.sources.NAME.root=PATH).")
        lines = read_csv_rows(path, ("file", "class", "patient"), f"Fix {self.csv_name} or point the "
                              "source's root at another folder (data.sources.NAME.root=PATH).")
        resolved = root.resolve()
        outside = [(line, row["file"], why) for line, row in lines
                   if (why := _outside(root / row["file"], resolved))]
        if outside:  # an image folder never follows a link out of its root either (folder_scan.unsafe_entry)
            shown = "; ".join(f"line {line}: {file!r:.120} {why}" for line, file, why in outside[:LISTED])
            more = f" (and {len(outside) - LISTED} more)" if len(outside) > LISTED else ""
            raise DataError(f"{path}: {len(outside)} row(s) name a file outside the data root {root}: "
                            f"{shown}{more}. Rows name files by paths relative to the root: copy the files "
                            "in, or point the source's root at a folder that holds them "
                            "(data.sources.NAME.root=PATH).")
        rows = [row for _, row in lines]
        if self.sequences:
            rows = [r for r in rows if r.get("sequence") in self.sequences]
        for row in rows:
            row["class"] = self.class_map.get(row["class"], row["class"])
        return root, rows

    def split_patients(self, patients: Sequence[str]) -> set[str]:
        """The held-out test patients (none with test_fraction 0)."""
        unique = sorted(set(patients))
        if not self.test_fraction:
            return set()
        splitter = GroupShuffleSplit(n_splits=1, test_size=self.test_fraction, random_state=self.split_seed)
        _, test_idx = next(splitter.split(unique, groups=unique))
        return {unique[i] for i in test_idx}


class MultiSourceData:
    """Sources (image folders and slice lists) mapped onto one class vocabulary, in one DataSplits.

    Args:
        sources: name -> source: an object of a kind registered in `SOURCE_KINDS` (an `ImageFolderSource`
            whose class_map maps its folders onto the vocabulary, a `SlicesCsvSource`), or its plain settings
            with `kind` (see `build_source`). The first source with a test split gives the `test` split; other
            test splits are extra tests `test_<name>`.
        classes: the vocabulary; every source's classes must be in it (a source may lack some).
        clean_split: the audit's clean-split setting (`auto` or a PATH) of every image-folder source given as
            settings that names none of its own: near-duplicate groups never straddle train and val, and the
            source's test gets a de-leaked subset.
        balance: `source_class` draws training batches with each (source, class) cell equally likely;
            `class_source` with each class equally likely, then each source equally likely within the class.
    """

    def __init__(self, name: str, sources: Mapping[str, object], classes: Sequence[str], channels: int = 1,
                 val_fraction: float = 0.15, split_seed: int = 0, balance: str | None = None,
                 cache: str = "disk", cache_dir: str | None = None, decode_workers: int = 2,
                 on_error: str = "raise", clean_split: str | None = None):
        if balance not in BALANCE:
            raise ConfigError(f"data.balance must be null, 'source_class' or 'class_source', not {balance!r}")
        if not sources:
            raise ConfigError("data.sources is empty: name at least one source.")
        bad = [n for n in sources if ":" in n or not n]
        if bad:
            raise ConfigError(f"data.sources names {bad} must be non-empty and hold no ':'.")
        self.name, self.classes = name, list(classes)
        self.sources = {n: build_source(n, s, cache_dir, clean_split) if isinstance(s, Mapping) else s
                        for n, s in sources.items()}
        for n, s in self.sources.items():
            kind_of(n, s)  # an object of no registered kind: refused here, before any work
        self.channels, self.val_fraction, self.split_seed, self.balance = channels, val_fraction, split_seed, balance
        self.cache_dir = Path(cache_dir).expanduser() if cache == "disk" and cache_dir else None
        self.decode_workers, self.on_error = decode_workers, on_error

    # --- records -------------------------------------------------------------------------------------
    def class_indices(self, source: str, names: Sequence[str]) -> list[int]:
        """The vocabulary indices of a source's class names (after its class_map); a name outside the vocabulary is
        a ConfigError naming the setting that maps it."""
        unknown = sorted(set(names) - set(self.classes))
        if unknown:
            raise ConfigError(f"source '{source}': class(es) {unknown} are not in data.classes {self.classes}; "
                              f"map them in data.sources.{source}.class_map.")
        return [self.classes.index(n) for n in names]

    def _folder_files(self, name: str, src: ImageFolderSource):
        """(train records, test records) of an image folder, keys `SOURCE:path`, labels in the vocabulary; and
        the folder's own records and classes."""
        train, test, classes = src.records()
        index = self.class_indices(name, classes)
        remap = lambda recs: [FileRecord(r.path, index[r.label], f"{name}:{r.key}") for r in recs]  # noqa: E731
        return remap(train), remap(test), (train, test, classes)

    def _folder_records(self, name: str, src: ImageFolderSource):
        """(train records, test records, groups key -> group, deleaked test keys or None) of an image folder."""
        mapped_train, mapped_test, (train, test, classes) = self._folder_files(name, src)
        manifest = src.manifest(train, test, classes)
        groups, deleaked = {}, None
        if manifest:  # near-duplicate groups from the audit: they never straddle train and val
            groups = {f"{name}:{k}": f"{name}:dup{g['id']}" for g in manifest["groups"] for k in g["members"]}
            deleaked = {f"{name}:{k}" for k in manifest["test_deleaked"]}
        return mapped_train, mapped_test, groups, deleaked

    def _slice_files(self, name: str, src: SlicesCsvSource):
        train, test, _, _ = self._slice_records(name, src)
        return train, test

    def _slice_records(self, name: str, src: SlicesCsvSource):
        root, rows = src.rows()
        names = sorted({r["class"] for r in rows})
        index = dict(zip(names, self.class_indices(name, names), strict=True))
        held = src.split_patients([r["patient"] for r in rows])
        train, test, groups = [], [], {}
        for row in rows:
            record = FileRecord(root / row["file"], index[row["class"]], f"{name}:{row['file']}")
            (test if row["patient"] in held else train).append(record)
            groups[record.key] = f"{name}:patient:{row['patient']}"
        return train, test, groups, None

    # --- the audit's view -----------------------------------------------------------------------------
    train_dir, test_dir = "Training", "Testing"

    def records(self) -> tuple[list[FileRecord], list[FileRecord], list[str]]:
        """Every source's training and test files for `medzoo audit`, keyed `Training/SOURCE:path` and
        `Testing/SOURCE:path` (the audit takes the split from the key's first part), labels in the vocabulary:
        duplicates are searched across all sources at once."""
        train, test = [], []
        for name, src in self.sources.items():
            source_train, source_test = kind_of(name, src).files(self, name, src)
            train += [FileRecord(r.path, r.label, f"{self.train_dir}/{r.key}") for r in source_train]
            test += [FileRecord(r.path, r.label, f"{self.test_dir}/{r.key}") for r in source_test]
        return train, test, self.classes

    def resolve(self) -> Path:
        """The folder that holds every source's root."""
        roots = [kind_of(name, src).root(src) for name, src in self.sources.items()]
        return Path(os.path.commonpath([str(r) for r in roots]))

    # --- load ----------------------------------------------------------------------------------------
    def load(self, preprocess: Callable[[np.ndarray], np.ndarray], preprocess_spec: str) -> DataSplits:
        """Decode (or read from the cache) every source, carve validation group-aware, and name the tests."""
        build = dict(channels=self.channels, preprocess=preprocess, preprocess_spec=preprocess_spec,
                     on_error=self.on_error, workers=self.decode_workers)
        trains, tests, groups, extra, report = [], {}, {}, {}, {"sources": {}}
        for name, src in self.sources.items():
            kind = kind_of(name, src)
            train_rec, test_rec, grp, deleaked = kind.parts(self, name, src)
            groups.update(grp)
            trains.append(load_or_build(self.cache_dir, f"{self.name}-{name}-train", train_rec, **build))
            if test_rec:
                tests[name] = load_or_build(self.cache_dir, f"{self.name}-{name}-test", test_rec, **build)
                if deleaked is not None:
                    extra[f"test_deleaked_{name}"] = _keep(tests[name], deleaked)
            report["sources"][name] = {"train_files": len(train_rec), "test_files": len(test_rec),
                                       "patients_known": kind.patients_known,
                                       "near_duplicate_groups": deleaked is not None}
        if not tests:
            raise DataError("no source has a test split: give one an image folder test_dir or a test_fraction.")
        pool = _concat(trains)
        names = list(self.sources)
        source_idx = np.array([names.index(source_of(k)) for k in pool.keys])
        train, val = group_split(pool, source_idx * len(self.classes) + pool.labels,
                                 [groups.get(k, k) for k in pool.keys], self.val_fraction, self.split_seed)
        test_name = next(iter(tests))
        for name, split in tests.items():
            if name != test_name:
                extra[f"test_{name}"] = split
        if f"test_deleaked_{test_name}" in extra:  # the name every report and plot already knows
            extra["test_deleaked"] = extra.pop(f"test_deleaked_{test_name}")
        for name in names:  # per-source validation: evaluated (and reported) like any extra split
            extra[f"val_{name}"] = _keep(val, {k for k in val.keys if source_of(k) == name})
        report.update(group_aware_val=True, balance=self.balance, test_split=test_name,
                      counts={split: source_class_counts(data, names, self.classes)
                              for split, data in {"train": train, "val": val, **{f"test_{n}": t for n, t in
                                                                                tests.items()}}.items()})
        strata = None
        train_sources = np.array([names.index(source_of(k)) for k in train.keys], dtype=np.int64)
        if self.balance == "source_class":
            strata = train_sources * len(self.classes) + train.labels
        elif self.balance == "class_source":  # nested: classes first, sources within a class (BalancedSampler)
            strata = np.column_stack([train.labels, train_sources])
        return DataSplits(train, val, test=tests[test_name], classes=self.classes, spatial_dims=2,
                          fingerprint=_fingerprint(pool.keys + [k for t in tests.values() for k in t.keys]),
                          report=report, extra_tests=extra, train_strata=strata)


def _image_folder(name: str, settings: dict, cache_dir: str | None, clean_split: str | None) -> ImageFolderSource:
    settings.setdefault("name", name)
    settings.setdefault("cache_dir", cache_dir)
    settings.setdefault("clean_split", clean_split)
    return ImageFolderSource(**settings)


SourceParts = tuple[list[FileRecord], list[FileRecord], dict[str, str], set[str] | None]


@dataclass(frozen=True)
class SourceKind:
    """How MultiSourceData builds and reads one kind of source. A new kind is one entry of `SOURCE_KINDS`.

    Attributes:
        type: the source's class (a source given as an object is matched by it).
        make: (name, settings, the data config's cache_dir, its clean_split) -> the source, from plain settings.
        files: (data, name, source) -> (train records, test records), keys `SOURCE:path`, labels in the
            vocabulary (`data.class_indices`): the audit's view, which must not read the audit's own results.
        parts: (data, name, source) -> the files, plus key -> group (a patient, a near-duplicate group: never
            split across train and val) and the de-leaked test keys (or None).
        root: source -> the folder that holds its files.
        patients_known: whether the groups are patients (reported in data_report.json).
    """

    type: type
    make: Callable[[str, dict, str | None, str | None], object]
    files: Callable[[MultiSourceData, str, Any], tuple[list[FileRecord], list[FileRecord]]]
    parts: Callable[[MultiSourceData, str, Any], SourceParts]
    root: Callable[[Any], Path]
    patients_known: bool = False


SOURCE_KINDS: dict[str, SourceKind] = {
    "image_folder": SourceKind(ImageFolderSource, _image_folder,
                               files=lambda data, name, src: data._folder_files(name, src)[:2],
                               parts=lambda data, name, src: data._folder_records(name, src),
                               root=lambda src: src.resolve()),
    "slices_csv": SourceKind(SlicesCsvSource, lambda name, settings, cache_dir, clean: SlicesCsvSource(**settings),
                             files=lambda data, name, src: data._slice_files(name, src),
                             parts=lambda data, name, src: data._slice_records(name, src),
                             root=lambda src: src.rows()[0], patients_known=True),
}


def register_source_kind(name: str, kind: SourceKind) -> SourceKind:
    """Add a source kind, usable as `kind: NAME` in a multi-source data config; registering the same kind again
    is harmless, another kind under a taken name is an error. A kind of one's own lives in one .py file that
    calls this, named by `imports=[...]` (docs/architecture.md)."""
    if not name.isidentifier() or name != name.lower():
        raise ConfigError(f"source kind {name!r}: a name is a lower-case Python identifier (like slices_csv).")
    if not isinstance(kind, SourceKind):
        raise ConfigError(f"source kind {name!r}: give a medzoo.datasets.multisource.SourceKind, not "
                          f"{type(kind).__name__}.")
    known = SOURCE_KINDS.get(name)
    if known is not None and known != kind:
        raise ConfigError(f"source kind {name!r} is already registered ({known.type.__name__}); choose another "
                          "name.")
    SOURCE_KINDS[name] = kind
    return kind


def kind_of(name: str, source: object) -> SourceKind:
    """The registered kind of a source object."""
    for kind in SOURCE_KINDS.values():
        if isinstance(source, kind.type):
            return kind
    known = ", ".join(kind.type.__name__ for kind in SOURCE_KINDS.values())
    raise ConfigError(f"data.sources.{name}: {type(source).__name__} is not a multi-source kind ({known}).")


def build_source(name: str, settings: Mapping, cache_dir: str | None = None,
                 clean_split: str | None = None) -> object:
    """A source from its settings: `kind` names an entry of SOURCE_KINDS (image_folder: ImageFolderSource's
    arguments, `name` defaulting to the source's and `clean_split` to the data config's; slices_csv:
    SlicesCsvSource's), the rest are its arguments. Plain values, so the card can carry them."""
    settings = dict(settings)
    kind = settings.pop("kind", None)
    if kind not in SOURCE_KINDS:
        raise ConfigError(f"data.sources.{name}.kind={kind!r}: use {' or '.join(SOURCE_KINDS)}, or a kind of your "
                          "own: register_source_kind(NAME, SourceKind(...)) in a module named by imports=[MODULE].")
    return SOURCE_KINDS[kind].make(name, settings, cache_dir, clean_split)


def group_split(split: SplitArrays, strata: np.ndarray, groups: Sequence[str], val_fraction: float,
                seed: int) -> tuple[SplitArrays, SplitArrays]:
    """Train / val with no group (patient or near-duplicate group) on both sides, stratified by `strata`."""
    if not 0 < val_fraction < 1:
        raise ConfigError(f"data.val_fraction must be between 0 and 1, not {val_fraction}")
    folds = StratifiedGroupKFold(n_splits=max(2, round(1 / val_fraction)), shuffle=True, random_state=seed)
    train_idx, val_idx = next(folds.split(np.arange(len(strata)), strata, np.asarray(groups)))
    return subset(split, train_idx), subset(split, val_idx)


def source_class_counts(split: SplitArrays, sources: Sequence[str], classes: Sequence[str]) -> dict:
    """{source: {class: count}} of a split."""
    counts = {s: dict.fromkeys(classes, 0) for s in sources}
    for key, label in zip(split.keys, split.labels, strict=True):
        counts[source_of(key)][classes[label]] += 1
    return counts


def _keep(split: SplitArrays, keys: set[str]) -> SplitArrays:
    return subset(split, np.array([i for i, k in enumerate(split.keys) if k in keys], dtype=np.int64))


def _concat(splits: Sequence[SplitArrays]) -> SplitArrays:
    shapes = {s.images.shape[1:] for s in splits}
    if len(shapes) > 1:
        raise DataError(f"sources decode to different shapes {sorted(shapes)}: the transforms' `pre` steps must "
                        "end with a fixed-size resize, and data.channels must be one value for all sources.")
    report = DecodeReport(skipped=[x for s in splits for x in s.report.skipped])
    return SplitArrays(np.concatenate([s.images for s in splits]), np.concatenate([s.labels for s in splits]),
                       [k for s in splits for k in s.keys], report)


def _fingerprint(keys: Sequence[str]) -> str:
    return "keys-sha256:" + hashlib.sha256("\n".join(keys).encode()).hexdigest()

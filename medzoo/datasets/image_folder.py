"""Image-folder datasets (`Training/<class>/*.jpg`, `Testing/<class>/*.jpg`) with a seeded validation split."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from medzoo.datasets.base import DataSplits
from medzoo.datasets.cache import load_or_build
from medzoo.datasets.folders import FileRecord, scan_split
from medzoo.datasets.roots import resolve_root
from medzoo.datasets.splits import stratified_split

log = logging.getLogger(__name__)


class ImageFolderSource:
    """Labelled 2D images in class folders; Testing is used for test only, validation is carved from Training."""

    def __init__(self, name: str, root: str | None = None, folder: str | None = None, fetch: str | None = None,
                 train_dir: str = "Training", test_dir: str = "Testing", class_map: Mapping[str, str] | None = None,
                 channels: int = 1, val_fraction: float = 0.15, split_seed: int = 0, on_error: str = "raise",
                 cache: str = "disk", cache_dir: str | None = None, decode_workers: int = 2, **loader_settings):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"data.on_error must be 'raise' or 'skip', not {on_error!r}")
        if cache not in ("disk", "memory"):
            raise ValueError(f"data.cache must be 'disk' or 'memory', not {cache!r}")
        self.name, self.root, self.folder, self.fetch = name, root, folder or name, fetch
        self.train_dir, self.test_dir, self.class_map = train_dir, test_dir, dict(class_map or {})
        self.channels, self.val_fraction, self.split_seed = channels, val_fraction, split_seed
        self.on_error, self.cache_dir = on_error, Path(cache_dir).expanduser() if cache == "disk" and cache_dir else None
        self.decode_workers = decode_workers
        self.loader_settings = loader_settings

    def resolve(self) -> Path:
        """The data root (see `resolve_root`)."""
        return resolve_root(self.root, self.folder, self.train_dir, self.fetch)

    def records(self) -> tuple[list[FileRecord], list[FileRecord], list[str]]:
        """Training and Testing file records and the class names (from the Training folders)."""
        root = self.resolve()
        train, classes = scan_split(root, self.train_dir, self.class_map)
        test, _ = scan_split(root, self.test_dir, self.class_map, classes)
        return train, test, classes

    def load(self, preprocess: Callable[[np.ndarray], np.ndarray], preprocess_spec: str) -> DataSplits:
        """Decode (or read from the cache) Training and Testing, and carve the validation split."""
        train_records, test_records, classes = self.records()
        build = dict(channels=self.channels, preprocess=preprocess, preprocess_spec=preprocess_spec,
                     on_error=self.on_error, workers=self.decode_workers)
        training = load_or_build(self.cache_dir, f"{self.name}-train", train_records, **build)
        testing = load_or_build(self.cache_dir, f"{self.name}-test", test_records, **build)
        train, val = stratified_split(training, self.val_fraction, self.split_seed)
        report = {"train_files": len(train_records), "test_files": len(test_records),
                  "training": training.report.as_dict(), "testing": testing.report.as_dict()}
        skipped = training.report.skipped + testing.report.skipped
        if skipped:
            log.warning("data.on_error=skip: %d file(s) skipped in total (listed in data_report.json)", len(skipped))
        return DataSplits(train, val, test=testing, classes=classes, spatial_dims=2,
                          fingerprint=_fingerprint(train_records + test_records), report=report)


def _fingerprint(records: list[FileRecord]) -> str:
    """A cheap fingerprint of the file list (names, labels and sizes)."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(f"{record.key}|{record.label}|{record.path.stat().st_size}\n".encode())
    return "files-sha256:" + digest.hexdigest()

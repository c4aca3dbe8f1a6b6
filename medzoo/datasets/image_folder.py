"""Image-folder datasets (`Training/<class>/*.jpg`, `Testing/<class>/*.jpg`) with a seeded validation split."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from medzoo.datasets.cache import load_or_build
from medzoo.datasets.dataset import DataSplits
from medzoo.datasets.folder_scan import FileRecord, SplitScan, scan_folders
from medzoo.datasets.roots import resolve_root
from medzoo.datasets.splits import keep_keys, stratified_split
from medzoo.errors import ConfigError, DataError
from medzoo.paths import cache_home

log = logging.getLogger(__name__)
# How many skipped entries a log line names, and how many ignored (non-image) entries the report lists.
LISTED = 5
LISTED_IGNORED = 50


class ImageFolderSource:
    """Labelled 2D images in class folders; Testing is used for test only, validation is carved from Training."""

    def __init__(self, name: str, root: str | None = None, folder: str | None = None, fetch: str | None = None,
                 train_dir: str = "Training", test_dir: str = "Testing", class_map: Mapping[str, str] | None = None,
                 channels: int = 1, val_fraction: float = 0.15, split_seed: int = 0, on_error: str = "raise",
                 cache: str = "disk", cache_dir: str | None = None, decode_workers: int = 2,
                 clean_split: str | None = None, dedup: bool = False):
        if on_error not in ("raise", "skip"):
            raise ConfigError(f"data.on_error must be 'raise' or 'skip', not {on_error!r}")
        if cache not in ("disk", "memory"):
            raise ConfigError(f"data.cache must be 'disk' or 'memory', not {cache!r}")
        self.name, self.root, self.folder, self.fetch = name, root, folder or name, fetch
        self.train_dir, self.test_dir, self.class_map = train_dir, test_dir, dict(class_map or {})
        self.channels, self.val_fraction, self.split_seed = channels, val_fraction, split_seed
        self.on_error, self.cache_dir = on_error, Path(cache_dir).expanduser() if cache == "disk" and cache_dir else None
        self.decode_workers = decode_workers
        self.clean_split, self.dedup = clean_split, dedup
        if dedup and not clean_split:
            raise ConfigError("data.dedup=true needs data.clean_split=PATH (clean_split.json from `medzoo audit`).")

    def resolve(self) -> Path:
        """The data root (see `resolve_root`)."""
        return resolve_root(self.root, self.folder, self.train_dir, self.fetch)

    def scan(self) -> tuple[SplitScan, SplitScan]:
        """Scan Training and Testing (classes from Training); unsafe entries raise or are skipped (data.on_error)."""
        root = self.resolve()
        train = scan_folders(root, self.train_dir, self.class_map, on_error=self.on_error)
        test = scan_folders(root, self.test_dir, self.class_map, train.classes, on_error=self.on_error)
        skipped = train.skipped + test.skipped
        if skipped:
            log.warning("data.on_error=skip: %d unsafe entr%s skipped while scanning %s: %s", len(skipped),
                        "y" if len(skipped) == 1 else "ies", root,
                        "; ".join(f"{key} ({why})" for key, why in skipped[:LISTED]))
        return train, test

    def records(self) -> tuple[list[FileRecord], list[FileRecord], list[str]]:
        """Training and Testing file records and the class names (from the Training folders)."""
        train, test = self.scan()
        return train.records, test.records, train.classes

    def manifest(self, train: list[FileRecord], test: list[FileRecord], classes: list[str]) -> dict | None:
        """The audit's clean-split manifest: `data.clean_split=PATH`, or `auto` (audited once, then cached)."""
        if not self.clean_split:
            return None
        if self.clean_split == "auto":
            return self._audited(train, test, classes)
        from medzoo.audit.manifest import read_clean_split  # the audit's module; import it only when asked

        path = Path(self.clean_split).expanduser()
        if not path.is_file():
            raise DataError(f"clean-split manifest not found: {path} (data.clean_split). Write it with "
                            "`medzoo audit data=... data.root=... hydra.run.dir=OUT` (OUT/clean_split.json).")
        return read_clean_split(path)

    def _audited(self, train: list[FileRecord], test: list[FileRecord], classes: list[str]) -> dict:
        from medzoo.audit.manifest import audit_manifest, read_clean_split  # reads files: only when asked

        folder = self.cache_dir or cache_home()
        path = folder / f"{self.name}-clean-split-{_fingerprint(train + test).split(':')[1][:20]}.json"
        if path.is_file():
            try:
                return read_clean_split(path)
            except DataError as exc:  # a cache is rebuilt, not trusted
                log.warning("%s; auditing again", exc)
        log.info("data.clean_split=auto: auditing %d files for duplicates and leaks (once; cached)",
                 len(train) + len(test))
        manifest = audit_manifest(train, test, classes, self.train_dir, self.test_dir)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest))
        tmp.replace(path)
        return manifest

    def load(self, preprocess: Callable[[np.ndarray], np.ndarray], preprocess_spec: str) -> DataSplits:
        """Decode (or read from the cache) Training and Testing, and carve the validation split."""
        train_scan, test_scan = self.scan()
        train_records, test_records, classes = train_scan.records, test_scan.records, train_scan.classes
        manifest = self.manifest(train_records, test_records, classes)
        dropped = 0
        if manifest and self.dedup:  # only training copies go: the shipped test split stays whole
            drop = set(manifest["drop"])
            kept = [r for r in train_records if r.key not in drop]
            dropped, train_records = len(train_records) - len(kept), kept
            log.info("data.dedup: %d duplicate training file(s) dropped (one copy per group kept)", dropped)
        build = dict(channels=self.channels, preprocess=preprocess, preprocess_spec=preprocess_spec,
                     on_error=self.on_error, workers=self.decode_workers)
        training = load_or_build(self.cache_dir, f"{self.name}-train", train_records, **build)
        testing = load_or_build(self.cache_dir, f"{self.name}-test", test_records, **build)
        groups = {key: group["id"] for group in manifest["groups"] for key in group["members"]} if manifest else None
        train, val = stratified_split(training, self.val_fraction, self.split_seed, groups)
        extra = {"test_deleaked": keep_keys(testing, set(manifest["test_deleaked"]))} if manifest else {}
        # *_files count every image entry taken into account, so that files - skipped = samples used.
        report = {"train_files": len(train_records) + len(train_scan.skipped),
                  "test_files": len(test_records) + len(test_scan.skipped),
                  "dedup_dropped": dropped, "group_aware_val": bool(groups),
                  "test_deleaked": len(extra["test_deleaked"].labels) if extra else None,
                  "training": _split_report(train_scan, training.report.as_dict()),
                  "testing": _split_report(test_scan, testing.report.as_dict())}
        skipped = train_scan.skipped + test_scan.skipped + training.report.skipped + testing.report.skipped
        if skipped:
            log.warning("data.on_error=skip: %d file(s) skipped in total (listed in data_report.json)", len(skipped))
        return DataSplits(train, val, test=testing, classes=classes, spatial_dims=2,
                          fingerprint=_fingerprint(train_records + test_records), report=report, extra_tests=extra)


def _split_report(scan: SplitScan, decoded: dict) -> dict:
    """The decode report of a split with the entries the scan skipped (unsafe links) and ignored (non-images)
    added: `skipped` counts every file that was not used, whichever step left it out."""
    skipped = scan.skipped + [(key, decoded["skip_reasons"][key]) for key in decoded["skipped_files"]]
    return {**decoded, "skipped": len(skipped), "skipped_files": [key for key, _ in skipped],
            "skip_reasons": dict(skipped), "skipped_at_scan": len(scan.skipped), "ignored": len(scan.ignored),
            "ignored_files": scan.ignored[:LISTED_IGNORED]}


def _fingerprint(records: list[FileRecord]) -> str:
    """A cheap fingerprint of the file list (names, labels and sizes)."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(f"{record.key}|{record.label}|{record.path.stat().st_size}\n".encode())
    return "files-sha256:" + digest.hexdigest()

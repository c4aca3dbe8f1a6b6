"""Scan `Training/<class>/*` and `Testing/<class>/*` image folders into labelled file lists."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from medzoo.datasets.images import IMAGE_EXTENSIONS
from medzoo.errors import DataError


@dataclass(frozen=True)
class FileRecord:
    """One labelled file; `key` is its path relative to the data root (`split/class/file`)."""

    path: Path
    label: int
    key: str


def list_class_folders(split_dir: Path, class_map: Mapping[str, str]) -> dict[str, list[Path]]:
    """Map canonical class name -> image files in `split_dir`, applying `class_map` to folder names."""
    if not split_dir.is_dir():
        raise DataError(f"split folder not found: {split_dir}. Expected <data.root>/{split_dir.name}/<class>/*.jpg; "
                        "check data.root (or MEDZOO_DATA) and data.train_dir / data.test_dir.")
    classes: dict[str, list[Path]] = {}
    for folder in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        name = class_map.get(folder.name, folder.name)
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise DataError(f"empty class folder: {folder} holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}). "
                            "Add images, remove the folder, or map it onto another class with data.class_map.")
        classes.setdefault(name, []).extend(files)
    if not classes:
        raise DataError(f"no class folders in {split_dir}: expected {split_dir}/<class>/*.jpg.")
    return classes


def scan_split(root: Path, split_dir: str, class_map: Mapping[str, str],
               classes: list[str] | None = None) -> tuple[list[FileRecord], list[str]]:
    """Records of one split; with `classes` given, the split must hold exactly those classes."""
    found = list_class_folders(root / split_dir, class_map)
    if classes is None:
        classes = sorted(found)
    missing, extra = sorted(set(classes) - set(found)), sorted(set(found) - set(classes))
    if missing:
        raise DataError(f"{root / split_dir}: class(es) {missing} are in the training folder but missing here. "
                        "Every class needs test images; add the folder or map names with data.class_map.")
    if extra:
        raise DataError(f"{root / split_dir}: class(es) {extra} are not in the training classes {classes}. "
                        "Map folder names onto training classes with data.class_map (e.g. notumor: no_tumor).")
    records = [FileRecord(path, classes.index(name), path.relative_to(root).as_posix())
               for name in classes for path in found[name]]
    return records, classes

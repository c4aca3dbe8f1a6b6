"""`medzoo data` lists the public datasets medzoo can fetch, where each goes and whether it is there already;
`medzoo data fetch name=NAME` downloads one into MEDZOO_DATA and verifies every file."""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from medzoo.close_names import unknown_name
from medzoo.datasets.fetch import SOURCES, DatasetSource, read_fingerprint
from medzoo.datasets.roots import data_home

if TYPE_CHECKING:
    from omegaconf import DictConfig

log = logging.getLogger(__name__)


def destination(cfg: DictConfig) -> Path:
    """The folder fetched sets go into: `dest`, else MEDZOO_DATA, else $MEDZOO_HOME/data."""
    return Path(cfg.dest).expanduser() if cfg.dest else data_home()


def presence(source: DatasetSource, target: Path) -> str:
    """Whether the files the fingerprint lists are under `target`, from their names only (hashing them is
    `fetch`'s job: it verifies a folder that is there without downloading anything)."""
    listed = read_fingerprint(source.fingerprint)
    found = sum((target / name).is_file() for name in listed)
    if found == len(listed):
        return "present (every listed file; `fetch` verifies their sha256 without downloading)"
    return f"incomplete ({found} of {len(listed)} files)" if found else "not fetched"


def describe(source: DatasetSource, home: Path) -> list[str]:
    """The lines `medzoo data` prints for one fetchable set."""
    files = len(read_fingerprint(source.fingerprint))
    size = f"{source.unpacked_bytes / 1e6:.1f} MB in {files:,} files" if source.unpacked_bytes else f"{files:,} files"
    target = home / source.folder
    lines = [f"{source.name:<14} {size}, from {source.url.split('/')[2]}",
             f"{'':<14} into {target}: {presence(source, target)}",
             f"{'':<14} fetch: medzoo data fetch name={source.name}"]
    if source.license_note:
        lines.append(f"{'':<14} license: {source.license_note}")
    return lines


def shipped() -> list[str]:
    """The MedMNIST files inside the package (no download), each with the setting that trains on it."""
    folder = resources.files("medzoo.datasets") / "builtin"
    configs = resources.files("medzoo.conf") / "data"
    lines = []
    for path in sorted(Path(str(folder)).glob("*.npz")):
        setting = (f"data={path.stem}" if (configs / f"{path.stem}.yaml").is_file()
                   else f"data=medmnist data.path=builtin:{path.stem}")
        lines.append(f"{path.stem:<14} {path.stat().st_size / 1e6:.1f} MB, inside medzoo: {setting}")
    return lines


def list_datasets(cfg: DictConfig) -> list[str]:
    """Print what `medzoo data fetch` can get, and what ships with medzoo; nothing is downloaded."""
    home = destination(cfg)
    lines = [f"public datasets medzoo can fetch (into {home}; MEDZOO_DATA or dest=DIR to choose):"]
    for source in SOURCES.values():
        lines += describe(source, home)
    own = shipped()
    if own:
        lines += ["", "shipped with medzoo, nothing to fetch:", *own]
    print("\n".join(lines))
    return lines


def fetch(cfg: DictConfig) -> Path:
    from medzoo.datasets.fetch import fetch_dataset

    root = fetch_dataset(cfg.name, destination(cfg), url=cfg.url)
    log.info("%s is ready at %s (every file verified); use data.root=%s", cfg.name, root, root)
    print(root)
    return root


ACTIONS = {"list": list_datasets, "fetch": fetch}


def data(cfg: DictConfig):
    if cfg.action not in ACTIONS:
        error = unknown_name("data action", cfg.action, ACTIONS)
        raise type(error)(f"{error} (medzoo data lists the datasets; medzoo data fetch name=NAME gets one.)")
    return ACTIONS[cfg.action](cfg)

"""Published checkpoints: a manifest of names -> file and/or URLs + sha256, resolved offline first.

Resolution order for a reference: an existing local path -> a file shipped inside the package -> the cache
directory (`$MEDZOO_HOME/checkpoints`) -> a download (https with resume, or `hf://REPO/FILE` through
huggingface_hub). Every file from the package, the cache or the network is checked against its sha256; a
mismatch is an error, and a bad download is deleted. `MEDZOO_OFFLINE=1` never touches the network.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from medzoo.download import download_file, offline_from_env, sha256_file
from medzoo.errors import DataError
from medzoo.naming import unknown_name
from medzoo.paths import medzoo_home

log = logging.getLogger(__name__)
MANIFEST = "published.json"
# Checkpoints up to this size ship inside the package (the zoo then works offline on a fresh machine); larger
# ones are served from the cache or by URL.
MAX_PACKAGED_BYTES = 25 * 2**20


@dataclass(frozen=True)
class Published:
    """One published checkpoint: where its bytes live and what it is for."""

    name: str
    sha256: str
    task: str
    file: str | None = None  # inside medzoo/zoo/weights/
    urls: tuple[str, ...] = ()
    summary: dict[str, Any] = field(default_factory=dict)  # headline metrics, shown by `medzoo zoo list`
    card: dict[str, Any] | None = None  # the full card, kept here for checkpoints not shipped in the package

    @property
    def shipped(self) -> bool:
        return self.file is not None

    @property
    def filename(self) -> str:
        return self.file or f"{self.name}.safetensors"


def cache_dir() -> Path:
    """Downloaded checkpoints: `$MEDZOO_HOME/checkpoints`."""
    return medzoo_home() / "checkpoints"


def manifest(path: Path | None = None) -> dict[str, Published]:
    """The published checkpoints, by name, from the package's manifest (or `path`)."""
    path = path or Path(str(resources.files("medzoo.zoo") / MANIFEST))
    entries = json.loads(path.read_text())
    return {e["name"]: Published(**{**e, "urls": tuple(e.get("urls", ()))}) for e in entries}


def is_published(ref: str) -> bool:
    return ref in manifest()


def _verified(path: Path, entry: Published) -> bool:
    return path.is_file() and sha256_file(path) == entry.sha256


def _packaged(entry: Published) -> Path | None:
    if entry.file is None:
        return None
    path = Path(str(resources.files("medzoo.zoo") / "weights" / entry.file))
    if not path.is_file():
        return None
    if not _verified(path, entry):
        raise DataError(f"{path}: sha256 does not match the zoo manifest for '{entry.name}'; the installed "
                        "package is damaged. Reinstall medzoo.")
    return path


def _download(entry: Published, url: str, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    if url.startswith("hf://"):
        from huggingface_hub import hf_hub_download

        repo, _, filename = url[len("hf://"):].partition("/")
        fetched = Path(hf_hub_download(repo_id=repo, filename=filename))
        part = target.with_name(target.name + ".part")
        part.write_bytes(fetched.read_bytes())
    else:
        part = target.with_name(target.name + ".part")
        download_file(url, part)
    digest = sha256_file(part)
    if digest != entry.sha256:
        part.unlink(missing_ok=True)
        raise DataError(f"checkpoint '{entry.name}' from {url}: sha256 {digest} does not match the manifest's "
                        f"{entry.sha256}; the download was deleted. The file at that URL has changed or is "
                        "damaged: try again later or use another URL.")
    os.replace(part, target)
    return target


def resolve(ref: str | os.PathLike) -> Path:
    """A checkpoint path for `ref`: a local file, or a published name resolved offline first."""
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    entries = manifest()
    if str(ref) not in entries:
        if os.sep in str(ref) or str(ref).endswith((".safetensors", ".pt", ".pth")):
            raise DataError(f"checkpoint not found: {path}. Pass an existing file, or a zoo name "
                            f"({', '.join(entries) or 'none published'}; `medzoo zoo list`).")
        raise unknown_name("checkpoint", str(ref), entries)
    entry = entries[str(ref)]
    packaged = _packaged(entry)
    if packaged is not None:
        return packaged
    cached = cache_dir() / entry.filename
    if _verified(cached, entry):
        return cached
    if cached.exists():
        log.warning("%s: sha256 mismatch in the cache; fetching it again", cached)
        cached.unlink()
    if not entry.urls:
        raise DataError(f"checkpoint '{entry.name}' is neither in the package nor in {cache_dir()} and has no URL.")
    if offline_from_env():
        raise DataError(f"checkpoint '{entry.name}' is not in {cache_dir()} and MEDZOO_OFFLINE is set. Copy "
                        f"{entry.filename} (sha256 {entry.sha256}) there from {entry.urls[0]}, or unset MEDZOO_OFFLINE.")
    errors = []
    for url in entry.urls:
        try:
            return _download(entry, url, cached)
        except (OSError, ConnectionError) as exc:
            errors.append(f"{url}: {exc}")
    raise DataError(f"checkpoint '{entry.name}' could not be downloaded ({'; '.join(errors)}). Work offline by "
                    f"copying {entry.filename} into {cache_dir()}.")

"""Published checkpoints: a manifest of names -> file and/or URLs + sha256, resolved offline first.

Resolution order for a reference: an existing local path -> a file shipped inside the package -> the cache
directory (`$MEDZOO_HOME/checkpoints`) -> a download (https with resume, or `hf://OWNER/REPO[@REVISION]/FILE`
through huggingface_hub). Every file from the package, the cache or the network is checked against its sha256; a
mismatch is an error, and a bad download is deleted. A download never grows past the entry's `size` (bytes),
or past `download.max_download_bytes()` for an entry without one. `MEDZOO_OFFLINE=1` never touches the network.

A Hub model id, `hf-hub:OWNER/REPO[@REVISION]` (timm's way of naming weights), has no manifest entry: its file
is checked against the sha256 the Hub declares for it and bounded by the download cap (`resolve_hf_hub`).
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from medzoo.close_names import unknown_name
from medzoo.download import CHUNK, download_file, max_download_bytes, offline_from_env, sha256_file
from medzoo.errors import DataError
from medzoo.paths import medzoo_home

log = logging.getLogger(__name__)
MANIFEST = "published.json"
# Checkpoints up to this size ship in a weights distribution (medzoo-weights: the zoo then works offline once it
# is installed); larger ones are served from the cache or by URL.
MAX_PACKAGED_BYTES = 25 * 2**20
# Installed weights distributions register their folder (a package of `NAME.safetensors` files) under this entry
# point group; a distribution stays under the package index's 100 MB per-file limit, so more checkpoints mean
# another distribution (weights-2/), not a larger one.
WEIGHTS_GROUP = "medzoo.weights"
MAX_WEIGHTS_WHEEL_BYTES = 95 * 10**6


@dataclass(frozen=True)
class Published:
    """One published checkpoint: where its bytes live and what it is for."""

    name: str
    sha256: str
    task: str
    file: str | None = None  # inside an installed weights distribution (medzoo-weights)
    urls: tuple[str, ...] = ()
    summary: dict[str, Any] = field(default_factory=dict)  # headline metrics, shown by `medzoo zoo list`
    card: dict[str, Any] | None = None  # the full card, kept here for checkpoints not shipped in the package
    size: int | None = None  # bytes; bounds a download (the download cap when unknown)

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
    if not path.is_file() or (entry.size is not None and path.stat().st_size != entry.size):
        return False  # a file of the wrong size is not hashed
    return sha256_file(path) == entry.sha256


def weights_folders() -> list[Path]:
    """The folders of the installed weights distributions (entry point group `medzoo.weights`), in name order."""
    folders = []
    for point in sorted(metadata.entry_points(group=WEIGHTS_GROUP), key=lambda p: p.name):
        try:
            folders.append(Path(str(resources.files(point.value))))
        except (ModuleNotFoundError, TypeError) as exc:  # registered but not importable: an install half removed
            log.warning("weights distribution %s (%s) is registered but cannot be found: %s", point.name,
                        point.value, exc)
    return folders


def _packaged(entry: Published) -> Path | None:
    """`entry`'s file in an installed weights distribution, checked against the manifest; None where none has it."""
    if entry.file is None:
        return None
    for folder in weights_folders():
        path = folder / entry.file
        if not path.is_file():
            continue
        if not _verified(path, entry):
            raise DataError(f"{path}: sha256 does not match the zoo manifest for '{entry.name}'; the installed "
                            "weights distribution is damaged or from another medzoo. Reinstall medzoo-weights "
                            "(pip install -e ./weights in a checkout).")
        return path
    return None


def _bound(entry: Published) -> tuple[int, str | None]:
    """The most bytes a download of `entry` may hold, and where that bound comes from (None: the download cap)."""
    if entry.size is not None:
        return entry.size, f"the size of '{entry.name}' in the zoo manifest"
    return max_download_bytes(), None


def _hf_parts(url: str) -> tuple[str, str | None, str]:
    """(repo id, revision or None, file path) of `hf://OWNER/REPO[@REVISION]/FILE` (or `hf://REPO/FILE`, an old
    repo without an owner, when the path has only two parts)."""
    parts = url[len("hf://"):].split("/")
    if len(parts) < 2 or not all(parts):
        raise DataError(f"{url}: not a Hugging Face Hub URL; write hf://OWNER/REPO[@REVISION]/FILE.")
    owned = len(parts) > 2
    repo, _, revision = "/".join(parts[:2] if owned else parts[:1]).partition("@")
    return repo, revision or None, "/".join(parts[2:] if owned else parts[1:])


def _fetch_hf(entry: Published, url: str, part: Path) -> None:
    """Fetch `hf://REPO/FILE` through huggingface_hub, then copy it to `part`, both within the entry's bound."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    bound, bound_from = _bound(entry)
    fix = ("the file in that repository has changed or is not the one expected: use another URL" if bound_from
           else "if the file is real, set MEDZOO_MAX_DOWNLOAD_BYTES to a larger number of bytes")
    repo, revision, filename = _hf_parts(url)
    try:  # the declared size, refused before huggingface_hub downloads the body
        declared = get_hf_file_metadata(hf_hub_url(repo_id=repo, filename=filename, revision=revision)).size
    except Exception:  # no metadata (offline, a network error): hf_hub_download reports it; the copy is bounded
        declared = None
    if declared is not None and declared > bound:
        raise DataError(f"checkpoint '{entry.name}' at {url} declares {declared:,} bytes, more than its bound of "
                        f"{bound:,} bytes ({bound_from or 'the download cap'}); not downloaded. {fix[0].upper()}"
                        f"{fix[1:]}.")
    fetched = Path(hf_hub_download(repo_id=repo, filename=filename, revision=revision))
    size = fetched.stat().st_size
    copied = 0
    if size <= bound:
        with open(fetched, "rb") as src, open(part, "wb") as dst:
            while block := src.read(min(CHUNK, bound + 1 - copied)):  # the file may still grow: read one byte past
                copied += len(block)
                if copied > bound:
                    break
                dst.write(block)
    if size > bound or copied > bound:
        part.unlink(missing_ok=True)
        raise DataError(f"checkpoint '{entry.name}' from {url}: huggingface_hub fetched {max(size, copied):,} bytes "
                        f"({fetched}), more than its bound of {bound:,} bytes ({bound_from or 'the download cap'}); "
                        f"nothing was copied to {part.parent}. {fix[0].upper()}{fix[1:]}.")


def _download(entry: Published, url: str, target: Path, hash_from: str = "the manifest's") -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    if url.startswith("hf://"):
        _fetch_hf(entry, url, part)
    else:
        download_file(url, part, max_bytes=entry.size, bound_from=_bound(entry)[1])
    digest = sha256_file(part)
    if digest != entry.sha256:
        part.unlink(missing_ok=True)
        raise DataError(f"checkpoint '{entry.name}' from {url}: sha256 {digest} does not match {hash_from} "
                        f"{entry.sha256}; the download was deleted. The file at that URL has changed or is "
                        "damaged: try again later or use another URL.")
    os.replace(part, target)
    return target


PATH_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
ZOO_PREFIX = "zoo:"


def looks_like_path(ref: str) -> bool:
    """A reference with a folder separator or a checkpoint suffix names a file; any other is a zoo name."""
    return any(sep in ref for sep in ("/", os.sep)) or ref.lower().endswith(PATH_SUFFIXES) or ref.startswith("~")


def resolve(ref: str | os.PathLike) -> Path:
    """A checkpoint path for `ref`: a file when `ref` looks like a path, a Hub model for `hf-hub:OWNER/REPO`, else
    a published zoo name resolved offline first. A bare name that is both a zoo entry and a file here is an
    error naming both."""
    text = os.fspath(ref)
    if not isinstance(ref, os.PathLike) and text.startswith(HF_HUB_PREFIX):
        return resolve_hf_hub(text)
    path = Path(text).expanduser()
    entries = manifest()
    explicit = text.startswith(ZOO_PREFIX)  # zoo:NAME always means the zoo entry
    text = text[len(ZOO_PREFIX):] if explicit else text
    if not explicit and (isinstance(ref, os.PathLike) or looks_like_path(text)):
        if path.is_file():
            return path
        raise DataError(f"checkpoint not found: {path}. Pass an existing file, or a zoo name "
                        f"({', '.join(entries) or 'none published'}; `medzoo zoo list`).")
    if text not in entries:
        if path.is_file() and not explicit:
            raise DataError(f"'{text}' is not a zoo checkpoint; to use the local file, write it as a path: "
                            f"ckpt=./{text}")
        raise unknown_name("checkpoint", text, entries)
    if path.exists() and not explicit:
        raise DataError(f"'{text}' is ambiguous: it is the zoo checkpoint '{text}' and also the local file "
                        f"{path.resolve()}. Write ckpt=zoo:{text} for the zoo checkpoint or ckpt=./{text} for the "
                        "file.")
    entry = entries[text]
    cached = cache_dir() / entry.filename  # where to look: the cache, the weights distributions, the URLs
    if _verified(cached, entry):
        return cached
    packaged = _packaged(entry)
    if packaged is not None:
        return packaged
    if cached.exists():
        log.warning("%s: sha256 mismatch in the cache; fetching it again", cached)
        cached.unlink()
    if not entry.urls:
        install = " Install the weights distribution (pip install -e ./weights in a checkout, or the medzoo_weights " \
                  "wheel)." if entry.shipped else ""
        raise DataError(f"checkpoint '{entry.name}' is neither in {cache_dir()} nor in an installed weights "
                        f"distribution, and has no URL.{install}")
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


HF_HUB_PREFIX = "hf-hub:"
# The weights files of a timm model repository, in the order timm itself tries them.
HF_HUB_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
_HF_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_COMMIT = re.compile(r"[0-9a-f]{40}")


def resolve_hf_hub(ref: str) -> Path:
    """The weights file of `hf-hub:OWNER/REPO[@REVISION]`, in the cache under the commit the revision names.

    With no manifest entry to hold a sha256, the file must match the sha256 the Hub declares for it (the id of
    its LFS object) and stay within the download cap; a mismatch deletes it. A cached file is used after the
    Hub has been asked which commit and hash the revision names now, so an id never serves stale weights.
    """
    repo, _, revision = ref[len(HF_HUB_PREFIX):].partition("@")
    if not _HF_REPO.fullmatch(repo) or ".." in repo or (revision and not re.fullmatch(r"[\w.-]+", revision)):
        raise DataError(f"{ref}: not a Hugging Face Hub model id; write hf-hub:OWNER/REPO or hf-hub:OWNER/REPO@REVISION "
                        "(e.g. hf-hub:timm/resnet18.a1_in1k).")
    if offline_from_env():
        raise DataError(f"{ref} needs the Hugging Face Hub and MEDZOO_OFFLINE is set: download {HF_HUB_WEIGHTS[0]} "
                        f"from https://huggingface.co/{repo} and pass its path, or unset MEDZOO_OFFLINE.")
    filename, meta = _hf_hub_weights(ref, repo, revision or None)
    sha256 = (meta.etag or "").strip('"').lower()
    if not _SHA256.fullmatch(sha256):  # a file kept in git rather than LFS has a git hash here
        raise DataError(f"{ref}: the Hub declares no sha256 for {filename} (ETag {meta.etag!r}), so the file cannot "
                        "be verified; download it and pass its path.")
    if not _COMMIT.fullmatch(meta.commit_hash or ""):  # it names a cache folder: never a path of the server's choice
        raise DataError(f"{ref}: the Hub answered with no commit hash for {filename} ({meta.commit_hash!r}); try "
                        "again, or download the file and pass its path.")
    entry = Published(name=ref, sha256=sha256, task="weights from the Hugging Face Hub")
    target = cache_dir() / "hf-hub" / repo.replace("/", "--") / meta.commit_hash / filename
    if _verified(target, entry):
        return target
    try:
        return _download(entry, f"hf://{repo}@{meta.commit_hash}/{filename}", target, "the Hub's declared sha256")
    except OSError as exc:
        raise DataError(f"{ref}: could not download {filename} ({_first_line(exc)}); try again, or download it and "
                        "pass its path.") from exc


def _hf_hub_weights(ref: str, repo: str, revision: str | None) -> tuple[str, Any]:
    """The first of HF_HUB_WEIGHTS that `repo` holds, with the Hub's metadata for it."""
    try:
        from huggingface_hub import get_hf_file_metadata, hf_hub_url
        from huggingface_hub.errors import EntryNotFoundError
    except ImportError as exc:
        raise DataError(f"{ref}: reading Hub ids needs huggingface_hub; pip install huggingface_hub, or download the "
                        "weights and pass their path.") from exc
    for filename in HF_HUB_WEIGHTS:
        try:
            return filename, get_hf_file_metadata(hf_hub_url(repo_id=repo, filename=filename, revision=revision))
        except EntryNotFoundError:
            continue
        except (OSError, ValueError) as exc:  # no network, no such repository or revision, a gated repository
            raise DataError(f"{ref}: the Hugging Face Hub gave no {filename} for {repo} ({_first_line(exc)}); check "
                            "the id and the network, or download the weights and pass their path.") from exc
    raise DataError(f"{ref}: {repo} holds neither {' nor '.join(HF_HUB_WEIGHTS)}; name a timm model repository or "
                    "pass a path to a weights file.")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]

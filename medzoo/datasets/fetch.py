"""Download public datasets, check them against a shipped fingerprint and unpack them into the data home."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path, PurePosixPath

from medzoo.download import CHUNK, TIMEOUT_S, download_file, offline_from_env, sha256_file
from medzoo.errors import ConfigError, DataError
from medzoo.naming import unknown_name
from medzoo.paths import medzoo_home

FINGERPRINTS = Path(__file__).with_name("fingerprints")
MAX_LISTED = 10


@dataclass(frozen=True)
class DatasetSource:
    """Where a public dataset is downloaded from and how its unpacked copy is checked."""

    name: str
    url: str
    folder: str
    fingerprint: Path
    strip_components: int = 1
    license_note: str = ""


_BRAIN_TUMOR_SHA = "3ea9f4eae54c67e5bddbf6f7a73582967a5f5f79"

SOURCES: dict[str, DatasetSource] = {
    "brain_tumor": DatasetSource(
        name="brain_tumor",
        url=(
            "https://codeload.github.com/SartajBhuvaji/Brain-Tumor-Classification-DataSet/zip/"
            + _BRAIN_TUMOR_SHA
        ),
        folder="brain-tumor-mri",
        fingerprint=FINGERPRINTS / "brain_tumor.sha256",
        license_note=(
            "The source repository states no license. The set is also on Kaggle as 'Brain Tumor "
            "Classification (MRI)' (Bhuvaji et al. 2020, DOI 10.34740/KAGGLE/DSV/1183165); until its "
            "license is confirmed, use it for research and testing only."
        ),
    ),
}


def default_data_home() -> Path:
    """Folder for fetched sets: $MEDZOO_DATA, else $MEDZOO_HOME/data, else ~/.cache/medzoo/data."""
    if os.environ.get("MEDZOO_DATA"):
        return Path(os.environ["MEDZOO_DATA"]).expanduser()
    return medzoo_home() / "data"


# ---------------------------------------------------------------------------------------------------
# Fingerprints (sha256sum format)

# sha256sum writes "<hex>  <name>" (text) or "<hex> *<name>" (binary), and prefixes the line with a
# backslash when it had to escape a backslash or newline in the name.
_SUM_LINE = re.compile(r"(\\?)([0-9a-fA-F]{64}) [ *](.+)")
_ESCAPES = {"\\": "\\", "n": "\n", "r": "\r"}


def _safe_relative(name: str) -> str | None:
    """The name as a clean relative POSIX path, or None if it is absolute or climbs out with '..'."""
    path = PurePosixPath(name)
    if not path.parts or path.is_absolute() or ".." in path.parts:
        return None
    return path.as_posix()


def read_fingerprint(fingerprint: Path) -> dict[str, str]:
    """Parse a sha256sum-format file into {relative POSIX path: lower-case hex digest}."""
    fingerprint = Path(fingerprint)
    try:
        text = fingerprint.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(
            f"cannot read the dataset fingerprint {fingerprint}: {exc}. Reinstall medzoo to restore it."
        ) from exc
    entries: dict[str, str] = {}
    # split on "\n" only: str.splitlines would also break names on rare separators such as \x1c
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _SUM_LINE.fullmatch(line)
        if match is None:
            raise DataError(f"{fingerprint}:{lineno}: not a sha256sum line: {line!r}")
        escaped, digest, name = match.groups()
        if escaped:
            name = re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), name)
        rel = _safe_relative(name)
        if rel is None:
            raise DataError(f"{fingerprint}:{lineno}: path {name!r} points outside the dataset folder")
        entries[rel] = digest.lower()
    if not entries:
        raise DataError(f"the dataset fingerprint {fingerprint} lists no files")
    return entries


def verify_folder(root: Path, fingerprint: Path) -> tuple[list[str], list[str]]:
    """Check every file the fingerprint lists under `root`; return (missing, mismatched) relative paths."""
    root = Path(root)
    missing: list[str] = []
    mismatched: list[str] = []
    for rel, digest in read_fingerprint(fingerprint).items():
        path = root / rel
        if not path.is_file():
            missing.append(rel)
            continue
        try:
            ok = sha256_file(path) == digest
        except OSError:
            ok = False  # an unreadable file is as useless as a wrong one
        if not ok:
            mismatched.append(rel)
    return missing, mismatched


def describe_problems(missing: Sequence[str], mismatched: Sequence[str], limit: int = MAX_LISTED) -> str:
    """One sentence naming up to `limit` missing and mismatched files, with their counts."""

    def listing(names: Sequence[str]) -> str:
        shown = ", ".join(f"'{n}'" for n in names[:limit])
        more = len(names) - limit
        return shown + (f" and {more} more" if more > 0 else "")

    parts = []
    if missing:
        parts.append(f"{len(missing)} file(s) missing: {listing(missing)}")
    if mismatched:
        parts.append(f"{len(mismatched)} file(s) differ from the fingerprint: {listing(mismatched)}")
    return "; ".join(parts) if parts else "all files match"


# ---------------------------------------------------------------------------------------------------
# Download


# ---------------------------------------------------------------------------------------------------
# Unpack


def _entry_parts(name: str, strip: int) -> tuple[str, ...] | None:
    """Path parts of a zip entry after stripping `strip` leading folders; None if nothing is left."""
    posix = name.replace("\\", "/")  # some zip writers use backslashes, which Windows would honour
    path = PurePosixPath(posix)
    if posix.startswith("/") or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise DataError(f"archive entry {name!r} would be written outside the dataset folder")
    parts = path.parts[strip:]
    return parts or None


def extract_zip(archive: Path, dest: Path, strip_components: int = 1) -> None:
    """Unpack `archive` into `dest`, dropping leading folders; reject every entry that would escape `dest`."""
    dest = Path(dest)
    root = dest.resolve()
    try:
        with zipfile.ZipFile(archive) as zf:
            # check every name before writing anything, so a hostile archive leaves no trace
            plan = []
            for info in zf.infolist():
                parts = _entry_parts(info.filename, strip_components)
                if parts is None:
                    continue
                out = dest.joinpath(*parts)
                if not out.resolve().is_relative_to(root):
                    raise DataError(
                        f"archive entry {info.filename!r} would be written outside the dataset folder"
                    )
                plan.append((info, out))
            for info, out in plan:
                if info.is_dir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError) as exc:
        raise DataError(f"the archive {archive} is damaged or not a zip file ({exc})") from exc


# ---------------------------------------------------------------------------------------------------
# Fetch


def _resolve(name: str, source: DatasetSource | None) -> DatasetSource:
    if source is None:
        if name not in SOURCES:
            raise unknown_name("dataset", name, SOURCES)
        return SOURCES[name]
    if source.name != name:
        raise ConfigError(f"dataset name '{name}' does not match the given source '{source.name}'")
    return source


def _top_folders(source: DatasetSource) -> str:
    # reverse order reads naturally for the usual Training/Testing and train/test/val splits
    tops = sorted(
        {rel.split("/", 1)[0] + "/" for rel in read_fingerprint(source.fingerprint) if "/" in rel},
        reverse=True,
    )
    return "folders " + " and ".join(tops) if tops else "its files"


def _unavailable(source: DatasetSource, url: str, target: Path, why: str) -> str:
    return (
        f"dataset '{source.name}' is not at {target} and cannot be downloaded: {why}. "
        f"Point data.root at a local copy of the set ({_top_folders(source)}) or set MEDZOO_DATA "
        f"to a folder that holds it as {source.folder}/. "
        f"To get a copy, download {url} by hand on a machine with internet access and unzip it: "
        f"its single top folder is the set (rename it to {source.folder}/ when using MEDZOO_DATA)."
    )


def _install(part: Path, source: DatasetSource, target: Path, url: str) -> Path:
    """Unpack the downloaded archive beside `target`, verify it, then move it into place in one rename."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{source.folder}.", suffix=".tmp", dir=target.parent))
    try:
        try:
            extract_zip(part, tmp, source.strip_components)
        except DataError as exc:
            raise DataError(
                f"{exc}. The download from {url} is not the expected archive; "
                f"run `medzoo data fetch name={source.name}` again, or fetch it by hand and point data.root at it."
            ) from exc
        missing, mismatched = verify_folder(tmp, source.fingerprint)
        if missing or mismatched:
            raise DataError(
                f"the archive from {url} does not match the fingerprint {source.fingerprint} of "
                f"dataset '{source.name}': {describe_problems(missing, mismatched)}. Nothing was installed. "
                f"Run `medzoo data fetch name={source.name}` again in case the download was damaged; "
                f"if it fails the same way the upstream files changed, so get a good copy by hand and "
                f"point data.root at it."
            )
        try:
            tmp.rename(target)
        except OSError as exc:
            # a concurrent fetch may have installed the same set first; that copy is as good as ours
            if not target.is_dir() or verify_folder(target, source.fingerprint) != ([], []):
                raise DataError(f"cannot move the unpacked set to {target}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    part.unlink(missing_ok=True)
    return target


def fetch_dataset(
    name: str,
    data_home: Path,
    *,
    url: str | None = None,
    offline: bool | None = None,
    progress: bool = True,
    source: DatasetSource | None = None,
    timeout: float = TIMEOUT_S,
) -> Path:
    """Download, verify and unpack dataset `name` into `data_home / folder`; return that folder.

    A verified existing folder is returned without network access. The archive is downloaded to
    `data_home / "<folder>.zip.part"`, which an interrupted download leaves behind to resume from.
    `source` replaces the registry entry (for sets not in SOURCES); `offline=None` reads MEDZOO_OFFLINE.
    """
    source = _resolve(name, source)
    url = url or source.url
    data_home = Path(data_home).expanduser()
    target = data_home / source.folder

    if target.exists():
        missing, mismatched = verify_folder(target, source.fingerprint)
        if not missing and not mismatched:
            return target
        # never delete a folder we did not just make: it may be someone's only copy
        raise DataError(
            f"{target} exists but does not match the fingerprint of dataset '{source.name}': "
            f"{describe_problems(missing, mismatched)}. Delete or move that folder and run "
            f"`medzoo data fetch name={source.name}` again, or point data.root at a good copy."
        )

    if offline is None:
        offline = offline_from_env()
    if offline:
        raise DataError(
            _unavailable(source, url, target, "offline mode is on (MEDZOO_OFFLINE or offline=True)")
        )

    data_home.mkdir(parents=True, exist_ok=True)
    part = data_home / f"{source.folder}.zip.part"
    for _ in range(2):
        try:
            resumed = download_file(url, part, progress=progress, timeout=timeout)
        except (OSError, HTTPException) as exc:  # URLError, timeouts and resets are all OSError
            if isinstance(exc, urllib.error.HTTPError):
                reason: object = f"HTTP {exc.code} {exc.reason}"
            else:
                reason = getattr(exc, "reason", None) or exc
            raise DataError(_unavailable(source, url, target, f"the download failed ({reason})")) from exc
        try:
            return _install(part, source, target, url)
        except DataError:
            part.unlink(missing_ok=True)  # a bad archive must not be resumed next time
            if not resumed:
                raise
            # the kept partial file may belong to an older archive: try once more from byte 0
    raise AssertionError("unreachable: the second attempt never resumes")

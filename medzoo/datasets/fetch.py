"""Download public datasets, check them against a shipped fingerprint and unpack them into the data home.

Every size the download or the archive claims is bounded before it is written: the download by the source's
`max_archive_bytes` (or `MEDZOO_MAX_DOWNLOAD_BYTES`), the unpacked files by its `unpacked_bytes` (or
`MEDZOO_MAX_UNPACKED_BYTES`) and by the free disk space. Only the files the fingerprint lists are unpacked;
other archive entries are skipped, counted and logged (a README beside the images is no reason to fail).
"""

from __future__ import annotations

import logging
import lzma
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path, PurePosixPath

from medzoo.close_names import unknown_name
from medzoo.download import CHUNK, TIMEOUT_S, download_file, offline_from_env, sha256_file
from medzoo.errors import ConfigError, DataError
from medzoo.limits import env_bytes
from medzoo.paths import medzoo_home

log = logging.getLogger(__name__)
FINGERPRINTS = Path(__file__).with_name("fingerprints")
MAX_LISTED = 10
# The most an archive may unpack to (the sum of the sizes its entries declare, counting only the files the
# fingerprint lists) when its DatasetSource gives no `unpacked_bytes`. MAX_UNPACKED_ENV replaces it (in bytes).
MAX_UNPACKED_BYTES = 16 * 2**30
ZIP_ENCRYPTED = 0x1  # general purpose flag bit 0: the entry needs a password
MAX_UNPACKED_ENV = "MEDZOO_MAX_UNPACKED_BYTES"


@dataclass(frozen=True)
class DatasetSource:
    """Where a public dataset is downloaded from and how its unpacked copy is checked."""

    name: str
    url: str
    folder: str
    fingerprint: Path
    strip_components: int = 1
    license_note: str = ""
    # Bounds on untrusted sizes, None where unknown (then MAX_DOWNLOAD_BYTES and MAX_UNPACKED_BYTES apply):
    max_archive_bytes: int | None = None  # the download stops past this many bytes
    unpacked_bytes: int | None = None  # the files the fingerprint lists, in all: their declared sizes may not exceed it


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
        # 93,079,343 bytes of JPEGs (91.4 MB when deflated here) and about 0.6 MB of zip headers: 7% to spare
        max_archive_bytes=100 * 2**20,
        unpacked_bytes=93_079_343,
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


def max_unpacked_bytes() -> int:
    """The unpacking cap: $MEDZOO_MAX_UNPACKED_BYTES when set, else MAX_UNPACKED_BYTES."""
    value = env_bytes(MAX_UNPACKED_ENV, MAX_UNPACKED_BYTES)
    return MAX_UNPACKED_BYTES if value is None else value


def _copy_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, out: Path, archive: Path) -> None:
    """Inflate one entry to `out`, refusing it as soon as it yields more than the size it declares."""
    written = 0
    with zf.open(info) as src, open(out, "wb") as dst:
        while block := src.read(CHUNK):
            written += len(block)
            if written > info.file_size:
                raise DataError(f"archive entry {info.filename!r} of {archive} inflates past the "
                                f"{info.file_size:,} bytes it declares; the archive is damaged or hostile")
            dst.write(block)


def extract_zip(archive: Path, dest: Path, strip_components: int = 1, *, wanted: Collection[str] | None = None,
                max_bytes: int | None = None) -> list[str]:
    """Unpack `archive` into `dest`, dropping leading folders; reject every entry that would escape `dest`.

    With `wanted` (relative paths after stripping), only those files are written; the names of the other file
    entries are returned, skipped. Before anything is written, the sizes the written entries declare must sum to
    at most `max_bytes` (None: `max_unpacked_bytes()`) and fit on the disk; while writing, an entry that inflates
    past its declared size is refused. Each is a DataError.
    """
    dest = Path(dest)
    root = dest.resolve()
    bound = max_unpacked_bytes() if max_bytes is None else max_bytes
    skipped: list[str] = []
    try:
        with zipfile.ZipFile(archive) as zf:
            # check every name and size before writing anything, so a hostile archive leaves no trace
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
                if wanted is not None and (info.is_dir() or "/".join(parts) not in wanted):
                    if not info.is_dir():
                        skipped.append(info.filename)
                    continue
                if info.flag_bits & ZIP_ENCRYPTED:
                    raise DataError(f"archive entry {info.filename!r} of {archive} is encrypted; medzoo unpacks "
                                    "plain zip archives only. Unzip it by hand and point data.root at the folder")
                plan.append((info, out))
            declared = sum(info.file_size for info, _ in plan if not info.is_dir())
            if declared > bound:
                setting = (f"raise {MAX_UNPACKED_ENV} if the archive is real" if max_bytes is None
                           else "the dataset's registry entry gives that size, so this is not its archive")
                raise DataError(f"the archive {archive} declares {declared:,} bytes in "
                                f"{len(plan):,} entries to unpack, more than the bound of {bound:,} bytes ({setting}); "
                                "nothing was written")
            dest.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(dest).free
            if declared > free:
                raise DataError(f"the archive {archive} unpacks to {declared:,} bytes but {dest} has only "
                                f"{free:,} bytes free; nothing was written. Free some space or set MEDZOO_DATA "
                                "to a folder on a larger disk")
            for info, out in plan:
                if info.is_dir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                _copy_member(zf, info, out, archive)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError, zlib.error,
            lzma.LZMAError) as exc:
        raise DataError(f"the archive {archive} is damaged or not a zip file ({exc})") from exc
    except OSError as exc:  # a damaged bzip2 stream, an entry that is both a file and a folder, a full disk
        raise DataError(f"cannot unpack the archive {archive} into {dest} ({exc})") from exc
    return skipped


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
        listed = read_fingerprint(source.fingerprint)
        try:
            skipped = extract_zip(part, tmp, source.strip_components, wanted=listed,
                                  max_bytes=source.unpacked_bytes)
        except DataError as exc:
            raise DataError(
                f"{exc}. The download from {url} is not the expected archive; "
                f"run `medzoo data fetch name={source.name}` again, or fetch it by hand and point data.root at it."
            ) from exc
        if skipped:
            shown = ", ".join(repr(name) for name in skipped[:MAX_LISTED])
            log.warning("%s: %d archive entry(ies) not listed in %s were not unpacked: %s%s", url, len(skipped),
                        source.fingerprint, shown, " ..." if len(skipped) > MAX_LISTED else "")
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
    `data_home / "<folder>.zip.part"`, which an interrupted download leaves behind to resume from (a download
    or an archive over its bound is deleted instead; see the module docstring).
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
            resumed = download_file(url, part, progress=progress, timeout=timeout, max_bytes=source.max_archive_bytes,
                                    bound_from=None if source.max_archive_bytes is None else
                                    f"max_archive_bytes of dataset '{source.name}'")
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

"""Downloads that resume, checksums, and the offline switch — shared by datasets and the zoo."""

from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from medzoo.errors import ConfigError, DataError

CHUNK = 1 << 16
TIMEOUT_S = 60.0
USER_AGENT = "medzoo/0.1 (+python-urllib)"
_TRUTHY = {"1", "true", "yes", "on"}


def offline_from_env() -> bool:
    """True when the environment variable MEDZOO_OFFLINE asks for no network access."""
    return os.environ.get("MEDZOO_OFFLINE", "").strip().lower() in _TRUTHY


def sha256_file(path: Path) -> str:
    """sha256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) from a Content-Range header; None where absent or '*'."""
    match = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", header or "")
    if match is None:
        return None, None
    start, total = match.groups()
    return (int(start) if start else None), (int(total) if total and total != "*" else None)


def download_file(url: str, dest: Path, *, progress: bool = True, timeout: float = TIMEOUT_S) -> bool:
    """Download `url` to `dest`, resuming from an existing partial `dest`; return True if it resumed.

    Network failures propagate as OSError/HTTPException and leave the partial file for the next try.
    """
    dest = Path(dest)
    have = dest.stat().st_size if dest.is_file() else 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        request = urllib.request.Request(url, headers=headers)
    except ValueError as exc:
        raise ConfigError(f"not a download URL: {url!r} ({exc})") from exc
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not have:
            raise
        _, total = _content_range(exc.headers.get("Content-Range"))
        exc.close()
        if total == have:
            return True  # an earlier run got every byte but stopped before unpacking
        dest.unlink()
        return download_file(url, dest, progress=progress, timeout=timeout)

    with response:
        status = response.status
        length_header = response.headers.get("Content-Length", "")
        length = int(length_header) if length_header.isdigit() else None
        if have and status == 206:
            start, total = _content_range(response.headers.get("Content-Range"))
            if start != have:
                # the server sent some other slice; appending it would corrupt the file
                response.close()
                dest.unlink()
                return download_file(url, dest, progress=progress, timeout=timeout)
            resumed, mode = True, "ab"
            expected = have + length if length is not None else total
        elif status in (200, None):  # None: a file:// URL, which has no status and ignores Range
            # a server that ignores Range sends the whole file again: start over, never append
            resumed, mode, have = False, "wb", 0
            expected = length
        else:
            raise DataError(f"unexpected HTTP status {status} from {url}")

        got = have
        with (
            open(dest, mode) as fh,
            tqdm(
                total=expected,
                initial=have,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=dest.name,
                disable=not progress,
            ) as bar,
        ):
            while chunk := response.read(CHUNK):
                fh.write(chunk)
                got += len(chunk)
                bar.update(len(chunk))
    # http.client returns a short body without an error when the peer closes early
    if expected is not None and got < expected:
        raise ConnectionError(f"connection closed after {got} of {expected} bytes")
    return resumed

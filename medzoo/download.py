"""Downloads that resume, checksums, and the offline switch — shared by datasets and the zoo."""

from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from medzoo.errors import ConfigError, DataError
from medzoo.limits import env_bytes
from medzoo.progress import BYTES, Meter

CHUNK = 1 << 16
TIMEOUT_S = 60.0
# The most a download may hold when its caller knows no size (a dataset archive, a checkpoint without a `size`
# in the manifest): bigger than any set or checkpoint medzoo fetches, small enough that an endless or hostile
# body cannot fill the disk. MAX_DOWNLOAD_ENV replaces it (in bytes).
MAX_DOWNLOAD_BYTES = 4 * 2**30
MAX_DOWNLOAD_ENV = "MEDZOO_MAX_DOWNLOAD_BYTES"
USER_AGENT = "medzoo/0.1 (+python-urllib)"
_TRUTHY = {"1", "true", "yes", "on"}


def offline_from_env() -> bool:
    """True when the environment variable MEDZOO_OFFLINE asks for no network access."""
    return os.environ.get("MEDZOO_OFFLINE", "").strip().lower() in _TRUTHY


def max_download_bytes() -> int:
    """The download cap: $MEDZOO_MAX_DOWNLOAD_BYTES when set, else MAX_DOWNLOAD_BYTES."""
    value = env_bytes(MAX_DOWNLOAD_ENV, MAX_DOWNLOAD_BYTES)
    return MAX_DOWNLOAD_BYTES if value is None else value


def _too_big(url: str, dest: Path, bound: int, bound_from: str | None, declared: int | None = None) -> DataError:
    """The error for a body over its bound, once the partial file is deleted."""
    dest.unlink(missing_ok=True)
    what = (f"declares {declared:,} bytes, more than" if declared is not None else "sent more than")
    source = bound_from or f"the download cap, {MAX_DOWNLOAD_ENV} or {MAX_DOWNLOAD_BYTES:,} by default"
    fix = (f"If the file is real, set {MAX_DOWNLOAD_ENV} to a larger number of bytes." if bound_from is None else
           "The file at that URL has changed or is not the one expected: try again later or use another URL.")
    return DataError(f"download from {url} {what} its bound of {bound:,} bytes ({source}); stopped, and {dest} "
                     f"was deleted. {fix}")


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


def download_file(url: str, dest: Path, *, progress: bool = True, timeout: float = TIMEOUT_S,
                  max_bytes: int | None = None, bound_from: str | None = None) -> bool:
    """Download `url` to `dest`, resuming from an existing partial `dest`; return True if it resumed.

    Never more than `max_bytes` bytes are kept (the file's known size; None: `max_download_bytes()`), nor more
    than the server declares (Content-Length, Content-Range): a declared size over the bound is refused before
    the body is read, and a body that runs past either stops there. Both delete `dest` and raise DataError
    naming the URL, the bound and `bound_from` (where the bound comes from; None: the environment setting).
    Network failures propagate as OSError/HTTPException and leave the partial file for the next try.
    """
    dest = Path(dest)
    bound = max_download_bytes() if max_bytes is None else int(max_bytes)
    if max_bytes is not None and bound_from is None:
        bound_from = "the size expected for this file"
    have = dest.stat().st_size if dest.is_file() else 0
    if have > bound:  # a partial file from another, bigger file: it can only be wrong
        dest.unlink()
        have = 0
    again = dict(progress=progress, timeout=timeout, max_bytes=bound, bound_from=bound_from)
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
        return download_file(url, dest, **again)

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
                return download_file(url, dest, **again)
            resumed, mode = True, "ab"
            expected = have + length if length is not None else total
        elif status in (200, None):  # None: a file:// URL, which has no status and ignores Range
            # a server that ignores Range sends the whole file again: start over, never append
            resumed, mode, have = False, "wb", 0
            expected = length
        else:
            raise DataError(f"unexpected HTTP status {status} from {url}")
        if expected is not None and expected > bound:
            raise _too_big(url, dest, bound, bound_from, declared=expected)
        # read one byte past the limit at most: enough to tell an over-long body from a complete one
        limit = bound if expected is None else expected

        got = have
        with (
            open(dest, mode) as fh,
            Meter(expected, f"download {dest.name}", BYTES, enabled=progress, initial=have) as bar,
        ):
            while chunk := response.read(min(CHUNK, limit + 1 - got)):
                if got + len(chunk) > limit:
                    break
                fh.write(chunk)
                got += len(chunk)
                bar.update(len(chunk))
        if got + len(chunk) > limit:
            raise _too_big(url, dest, limit, bound_from if expected is None else "the size the server declared")
    # http.client returns a short body without an error when the peer closes early
    if expected is not None and got < expected:
        raise ConnectionError(f"connection closed after {got} of {expected} bytes")
    return resumed

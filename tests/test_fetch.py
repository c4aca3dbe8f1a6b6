"""Tests for medzoo.datasets.fetch against a local HTTP server: no real network is used."""

from __future__ import annotations

import hashlib
import io
import os
import random
import re
import socket
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from medzoo.datasets.fetch import (
    SOURCES,
    DatasetSource,
    default_data_home,
    extract_zip,
    fetch_dataset,
    read_fingerprint,
    verify_folder,
)
from medzoo.download import download_file
from medzoo.errors import DataError, UnknownNameError
from tests.loopback import RangeServer as _Server
from tests.loopback import serve

TOP = "Tiny-Set-0123abcd"
NAMES = [
    "Training/glioma_tumor/gg (1).jpg",
    "Training/glioma_tumor/gg (2).jpg",
    "Training/no_tumor/image(7).jpg",
    "Testing/no_tumor/image (1).jpg",
    "Testing/pituitary_tumor/p (20).jpg",
]
PART = "tiny-set.zip.part"
SHARED_BRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "brain-tumor-mri"


def make_files(seed: int = 0) -> dict[str, bytes]:
    """Random JPEG-named blobs, big enough that a download spans several reads."""
    rng = random.Random(seed)
    return {name: b"\xff\xd8\xff\xe0" + rng.randbytes(12_000) for name in NAMES}


def make_zip(files: dict[str, bytes], extra: tuple[tuple[str, bytes], ...] = ()) -> bytes:
    """A zip laid out like GitHub's codeload archives: everything under one top folder."""
    buf = io.BytesIO()
    # stored, not deflated, so the archive stays as large as its contents and offsets are predictable
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{TOP}/", b"")
        for name, data in files.items():
            zf.writestr(f"{TOP}/{name}", data)
        for name, data in extra:
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture(autouse=True)
def _no_proxy_no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # a proxy would route 127.0.0.1 away from the test server; MEDZOO_* would change defaults
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    for var in ("MEDZOO_OFFLINE", "MEDZOO_DATA", "MEDZOO_HOME"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def server() -> Iterator[_Server]:
    with serve(make_zip(make_files())) as srv:
        yield srv


@pytest.fixture
def tiny(tmp_path: Path, server: _Server) -> DatasetSource:
    fingerprint = tmp_path / "tiny.sha256"
    lines = [f"{hashlib.sha256(data).hexdigest()}  {name}" for name, data in make_files().items()]
    fingerprint.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return DatasetSource(name="tiny", url=server.url, folder="tiny-set", fingerprint=fingerprint)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def _installed_ok(path: Path) -> None:
    files = {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    assert files == make_files()


def test_fetch_downloads_verifies_and_lays_out(home: Path, tiny: DatasetSource, server: _Server) -> None:
    path = fetch_dataset("tiny", home, source=tiny, progress=True)
    assert path == home / "tiny-set"
    _installed_ok(path)
    assert sorted(os.listdir(home)) == ["tiny-set"]  # no .part, no temp folder left over
    assert server.requests == [(None, 200)]


def test_second_call_is_a_cache_hit(home: Path, tiny: DatasetSource, server: _Server) -> None:
    first = fetch_dataset("tiny", home, source=tiny, progress=False)
    server.payload = b"not a zip"  # any new download would now fail
    assert fetch_dataset("tiny", home, source=tiny, progress=False) == first
    assert fetch_dataset("tiny", home, source=tiny, progress=False, offline=True) == first
    assert len(server.requests) == 1


def test_resumes_a_truncated_part(home: Path, tiny: DatasetSource, server: _Server) -> None:
    half = len(server.payload) // 2
    home.mkdir()
    (home / PART).write_bytes(server.payload[:half])
    path = fetch_dataset("tiny", home, source=tiny, progress=False)
    assert server.requests == [(f"bytes={half}-", 206)]
    _installed_ok(path)
    assert verify_folder(path, tiny.fingerprint) == ([], [])
    assert not (home / PART).exists()


def test_interrupted_download_keeps_part_then_resumes(
    home: Path, tiny: DatasetSource, server: _Server
) -> None:
    server.cut_next = 20_000
    with pytest.raises(DataError, match=re.escape(server.url)):
        fetch_dataset("tiny", home, source=tiny, progress=False)
    assert (home / PART).stat().st_size == 20_000
    assert not (home / "tiny-set").exists()
    _installed_ok(fetch_dataset("tiny", home, source=tiny, progress=False))
    assert server.requests[-1] == ("bytes=20000-", 206)


def test_server_ignoring_range_restarts_from_zero(tmp_path: Path, server: _Server) -> None:
    server.honor_range = False
    dest = tmp_path / "x.zip.part"
    half = len(server.payload) // 2
    dest.write_bytes(server.payload[:half])
    # checked at byte level: zipfile would tolerate junk before the archive, hiding an append bug
    assert download_file(server.url, dest, progress=False) is False
    assert dest.read_bytes() == server.payload
    assert server.requests == [(f"bytes={half}-", 200)]


def test_server_ignoring_range_still_installs(home: Path, tiny: DatasetSource, server: _Server) -> None:
    server.honor_range = False
    home.mkdir()
    (home / PART).write_bytes(server.payload[:1000])
    _installed_ok(fetch_dataset("tiny", home, source=tiny, progress=False))
    assert server.requests == [("bytes=1000-", 200)]


def test_complete_part_is_used_after_416(tmp_path: Path, server: _Server) -> None:
    dest = tmp_path / "x.zip.part"
    dest.write_bytes(server.payload)
    assert download_file(server.url, dest, progress=False) is True
    assert dest.read_bytes() == server.payload
    assert server.requests == [(f"bytes={len(server.payload)}-", 416)]


def test_stale_part_from_another_archive_is_replaced(
    home: Path, tiny: DatasetSource, server: _Server
) -> None:
    other = make_zip(make_files(seed=1))
    assert len(other) == len(server.payload)
    half = len(other) // 2
    home.mkdir()
    (home / PART).write_bytes(other[:half])
    _installed_ok(fetch_dataset("tiny", home, source=tiny, progress=False))
    assert server.requests == [(f"bytes={half}-", 206), (None, 200)]


def test_corrupt_and_missing_files_are_named_and_nothing_is_installed(
    home: Path, tiny: DatasetSource, server: _Server
) -> None:
    files = make_files()
    files["Training/glioma_tumor/gg (2).jpg"] = b"\xff\xd8\xff\xe0 damaged"
    del files["Testing/pituitary_tumor/p (20).jpg"]
    server.payload = make_zip(files)
    with pytest.raises(DataError) as info:
        fetch_dataset("tiny", home, source=tiny, progress=False)
    message = str(info.value)
    assert "'Training/glioma_tumor/gg (2).jpg'" in message
    assert "'Testing/pituitary_tumor/p (20).jpg'" in message
    assert "1 file(s) missing" in message and "1 file(s) differ" in message
    assert set(os.listdir(home)) <= {PART}


@pytest.mark.parametrize("how", ["argument", "env-1", "env-true"])
def test_offline_raises_with_the_fix_and_no_request(
    how: str, home: Path, tiny: DatasetSource, server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    offline = True if how == "argument" else None
    if how.startswith("env"):
        monkeypatch.setenv("MEDZOO_OFFLINE", how.split("-")[1].upper())
    with pytest.raises(DataError) as info:
        fetch_dataset("tiny", home, source=tiny, progress=False, offline=offline)
    message = str(info.value)
    assert "data.root" in message and "MEDZOO_DATA" in message and server.url in message
    assert "Training/ and Testing/" in message
    assert server.requests == []
    assert not home.exists()


def test_unreachable_url_raises_data_error(home: Path, tiny: DatasetSource) -> None:
    with socket.socket() as sock:  # bind then close: nothing listens on that port afterwards
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/tiny.zip"
    with pytest.raises(DataError) as info:
        fetch_dataset("tiny", home, source=tiny, url=url, progress=False, timeout=5)
    assert url in str(info.value) and "data.root" in str(info.value)
    assert not (home / "tiny-set").exists()


def test_http_error_is_a_data_error(home: Path, tiny: DatasetSource, server: _Server) -> None:
    server.fail_with = 404
    with pytest.raises(DataError, match="HTTP 404"):
        fetch_dataset("tiny", home, source=tiny, progress=False)
    assert not (home / "tiny-set").exists()


@pytest.mark.parametrize(
    "entry",
    [f"{TOP}/../../evil.jpg", f"{TOP}/Training/../../../evil.jpg", "/abs/evil.jpg"],
)
def test_zip_slip_entry_is_rejected(
    entry: str, tmp_path: Path, home: Path, tiny: DatasetSource, server: _Server
) -> None:
    server.payload = make_zip(make_files(), extra=((entry, b"gotcha"),))
    with pytest.raises(DataError, match="outside the dataset folder"):
        fetch_dataset("tiny", home, source=tiny, progress=False)
    assert not list(tmp_path.rglob("evil.jpg"))
    assert set(os.listdir(home)) <= {PART}


def test_unknown_name_suggests_the_close_one(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="Did you mean: brain_tumor"):
        fetch_dataset("brain_tumour", tmp_path / "home")
    assert not (tmp_path / "home").exists()


def test_existing_bad_folder_is_reported_not_replaced(
    home: Path, tiny: DatasetSource, server: _Server
) -> None:
    target = home / "tiny-set" / "Training" / "glioma_tumor"
    target.mkdir(parents=True)
    (target / "gg (1).jpg").write_bytes(b"local edit")
    with pytest.raises(DataError, match=r"exists but does not match.*gg \(1\)\.jpg"):
        fetch_dataset("tiny", home, source=tiny, progress=False)
    assert (target / "gg (1).jpg").read_bytes() == b"local edit"
    assert server.requests == []


def test_verify_folder_reads_sha256sum_variants(tmp_path: Path) -> None:
    root = tmp_path / "set"
    (root / "a dir").mkdir(parents=True)
    (root / "a dir" / "x (1).jpg").write_bytes(b"one")
    (root / "y.jpg").write_bytes(b"two")
    sha = {k: hashlib.sha256(v).hexdigest() for k, v in {"one": b"one", "two": b"two"}.items()}
    fingerprint = tmp_path / "fp.sha256"
    fingerprint.write_text(
        f"# comment\n\n{sha['one']}  ./a dir/x (1).jpg\n{sha['one'].upper()} *y.jpg\n{sha['two']}  gone.jpg\n",
        encoding="utf-8",
    )
    assert verify_folder(root, fingerprint) == (["gone.jpg"], ["y.jpg"])
    fingerprint.write_text(f"{sha['one']}  ../outside.jpg\n", encoding="utf-8")
    with pytest.raises(DataError, match="outside"):
        verify_folder(root, fingerprint)


def test_default_data_home_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert default_data_home() == Path.home() / ".cache" / "medzoo" / "data"
    monkeypatch.setenv("MEDZOO_HOME", str(tmp_path / "mh"))
    assert default_data_home() == tmp_path / "mh" / "data"
    monkeypatch.setenv("MEDZOO_DATA", str(tmp_path / "md"))
    assert default_data_home() == tmp_path / "md"


def test_shipped_brain_tumor_fingerprint() -> None:
    source = SOURCES["brain_tumor"]
    assert source.folder == "brain-tumor-mri" and source.strip_components == 1
    assert "3ea9f4eae54c67e5bddbf6f7a73582967a5f5f79" in source.url
    entries = read_fingerprint(source.fingerprint)
    assert len(entries) == 3264
    assert sum(rel.startswith("Training/") for rel in entries) == 2870
    assert sum(rel.startswith("Testing/") for rel in entries) == 394


@pytest.mark.skipif(not SHARED_BRAIN.is_dir(), reason="no shared copy of the brain-tumour set")
def test_shipped_fingerprint_matches_the_shared_copy() -> None:
    assert verify_folder(SHARED_BRAIN, SOURCES["brain_tumor"].fingerprint) == ([], [])


def _damaged_zip(kind: str) -> bytes:
    """One listed file of the tiny set in an archive damaged as `kind` says (the local header is at offset 0)."""
    name, data = NAMES[0], make_files()[NAMES[0]]
    method = {"encrypted": zipfile.ZIP_STORED, "bad_deflate": zipfile.ZIP_DEFLATED, "bad_bzip2": zipfile.ZIP_BZIP2,
              "bad_lzma": zipfile.ZIP_LZMA}[kind]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        zf.writestr(f"{TOP}/{name}", data)
    raw = bytearray(buf.getvalue())
    if kind == "encrypted":  # general purpose flag bit 0, in the local header and the central directory
        raw[6] |= 1
        raw[raw.find(b"PK\x01\x02") + 8] |= 1
    else:
        start = 30 + len(f"{TOP}/{name}".encode())
        raw[start:start + 16] = (b"\x00" if kind == "bad_lzma" else b"\x41") * 16  # zeros: LZMA's own error
    return bytes(raw)


@pytest.mark.parametrize("kind, message", [
    ("encrypted", "is encrypted; medzoo unpacks plain zip archives only"),
    ("bad_deflate", "is damaged or not a zip file"),
    ("bad_bzip2", "cannot unpack the archive"),
    ("bad_lzma", "is damaged or not a zip file"),
])
def test_a_damaged_or_encrypted_archive_is_one_error_and_leaves_nothing(
        kind: str, message: str, home: Path, tiny: DatasetSource, server: _Server) -> None:
    # each was a traceback from zipfile, zlib, bz2 or lzma, which left the .part behind to be resumed
    server.payload = _damaged_zip(kind)
    with pytest.raises(DataError, match=message):
        fetch_dataset("tiny", home, source=tiny, progress=False)
    assert os.listdir(home) == []  # neither the download nor a half-unpacked folder


def test_an_entry_that_is_both_a_file_and_a_folder_is_one_error(tmp_path: Path) -> None:
    archive = tmp_path / "clash.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("top/x", b"1")
        zf.writestr("top/x/y", b"2")
    with pytest.raises(DataError, match=rf"cannot unpack the archive {archive} into .*File exists"):
        extract_zip(archive, tmp_path / "out")

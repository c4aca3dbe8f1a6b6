"""Bounds on every untrusted size: downloads, the zoo (https and hf://), dataset archives, deflated DICOM, .nii.gz
and the reader memory cap. Hostile inputs are built here, small on disk and huge when inflated; the bombs are
read in a child process whose peak memory is measured."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import random
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian

from medzoo.datasets.fetch import SOURCES, DatasetSource, extract_zip, fetch_dataset, read_fingerprint
from medzoo.datasets.readers import read_volume
from medzoo.datasets.readers import registry as readers_base
from medzoo.datasets.readers.dicom_native import file_meta
from medzoo.datasets.readers.medmnist_file import read_medmnist
from medzoo.download import MAX_DOWNLOAD_ENV, download_file
from medzoo.errors import ConfigError, DataError
from medzoo.zoo import hub
from tests.cli_runner import run_medzoo
from tests.conftest import SHARED_DATA
from tests.dicom_builders import write_dicom_slice
from tests.loopback import serve

REPO = Path(__file__).resolve().parents[1]
# Peak resident memory allowed to a child process that reads a bomb (Python, numpy, pydicom, nibabel: ~60 MB).
RSS_BOUND_MB = 400
# Each bomb inflates to at least this much: more than RSS_BOUND_MB, so reading it whole would break the bound.
BOMB_INFLATED = 512 * 2**20
MB = 2**20
TOP = "Tiny-Set-0123abcd"
NAMES = ["Training/glioma_tumor/gg (1).jpg", "Training/no_tumor/image(7).jpg", "Testing/no_tumor/image (1).jpg"]


@pytest.fixture(autouse=True)
def _online_no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # a proxy would route 127.0.0.1 away from the test server; conftest sets MEDZOO_OFFLINE
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "MEDZOO_OFFLINE",
                MAX_DOWNLOAD_ENV, "MEDZOO_MAX_UNPACKED_BYTES", readers_base.MAX_ARRAY_ENV):
        monkeypatch.delenv(var, raising=False)


def _cache_files() -> list[str]:
    folder = hub.cache_dir()
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ----------------------------------------------------------------------------------------------- downloads

def test_endless_body_stops_at_the_bound_and_the_partial_file_is_deleted(tmp_path: Path) -> None:
    dest = tmp_path / "x.part"
    with serve(b"start", "x") as server:
        server.endless = True
        with pytest.raises(DataError) as info:
            download_file(server.url, dest, progress=False, max_bytes=300_000, bound_from="the test's bound")
    message = str(info.value)
    assert server.url in message and "300,000 bytes" in message and "the test's bound" in message
    assert not dest.exists()


def test_endless_body_stops_at_the_env_cap_which_the_error_names(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MAX_DOWNLOAD_ENV, "250000")
    dest = tmp_path / "x.part"
    with serve(b"", "x") as server:
        server.endless = True
        with pytest.raises(DataError, match=rf"250,000 bytes.*{MAX_DOWNLOAD_ENV}"):
            download_file(server.url, dest, progress=False)
    assert not dest.exists()
    monkeypatch.setenv(MAX_DOWNLOAD_ENV, "lots")
    with pytest.raises(ConfigError, match=MAX_DOWNLOAD_ENV):
        download_file("http://127.0.0.1:9/x", dest, progress=False)


def test_declared_length_over_the_bound_is_refused_before_the_body(tmp_path: Path) -> None:
    dest = tmp_path / "x.part"
    dest.write_bytes(b"an old partial file")
    with serve(b"x" * 1000, "x") as server:
        server.honor_range = False
        server.content_length = 10**10  # the body never comes: reading it would end in a ConnectionError
        with pytest.raises(DataError, match=r"declares 10,000,000,000 bytes, more than its bound of 5,000 bytes"):
            download_file(server.url, dest, progress=False, max_bytes=5000)
    assert not dest.exists()


@pytest.fixture
def zoo_entry(monkeypatch: pytest.MonkeyPatch):
    """Publish one checkpoint-like file under `url` with manifest `size`; returns (make, payload)."""
    payload = random.Random(0).randbytes(50_000)

    def make(url: str, size: int | None = len(payload), sha256: str | None = None) -> hub.Published:
        entry = hub.Published(name="demo", sha256=sha256 or hashlib.sha256(payload).hexdigest(), task="t",
                              urls=(url,), size=size)
        monkeypatch.setattr(hub, "manifest", lambda path=None: {entry.name: entry})
        return entry

    return make, payload


def test_zoo_download_longer_than_the_manifest_size_leaves_nothing_in_the_cache(zoo_entry) -> None:
    make, payload = zoo_entry
    with serve(payload + b"more", "demo.safetensors") as server:
        make(server.url)
        with pytest.raises(DataError, match=r"50,004 bytes.*50,000 bytes \(the size of 'demo' in the zoo manifest\)"):
            hub.resolve("demo")
        server.payload, server.endless = payload, True  # the right bytes, then more for ever
        with pytest.raises(DataError, match=r"sent more than its bound of 50,000 bytes"):
            hub.resolve("demo")
    assert _cache_files() == []


def test_zoo_endless_download_without_a_size_stops_at_the_cap(zoo_entry, monkeypatch: pytest.MonkeyPatch) -> None:
    make, payload = zoo_entry
    monkeypatch.setenv(MAX_DOWNLOAD_ENV, "100000")
    with serve(payload, "demo.safetensors") as server:
        server.endless = True
        make(server.url, size=None)
        with pytest.raises(DataError, match=rf"100,000 bytes.*{MAX_DOWNLOAD_ENV}"):
            hub.resolve("demo")
    assert _cache_files() == []


def test_zoo_download_within_its_size_lands_verified(zoo_entry) -> None:
    make, payload = zoo_entry
    with serve(payload, "demo.safetensors") as server:
        make(server.url)
        assert hub.resolve("demo").read_bytes() == payload
    assert _cache_files() == ["demo.safetensors"]


def test_shipped_manifest_sizes_match_the_shipped_files() -> None:
    entries = json.loads((REPO / "medzoo" / "zoo" / "published.json").read_text())
    for entry in hub.manifest().values():
        assert entry.size == (REPO / "weights" / "medzoo_weights" / entry.file).stat().st_size, entry.name
    assert all("size" in e for e in entries)


# ------------------------------------------------------------------------------------------------ hf://

@pytest.fixture
def hub_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, zoo_entry):
    """A Hub-like server on 127.0.0.1 that huggingface_hub downloads from, with its cache under tmp_path."""
    constants = pytest.importorskip("huggingface_hub.constants")
    make, payload = zoo_entry
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with serve(payload, "demo.safetensors") as server:
        server.hf_commit = "c0ffee" * 6 + "c0fe"
        base = f"http://127.0.0.1:{server.server_address[1]}"
        monkeypatch.setattr(constants, "ENDPOINT", base)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", base + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        yield server, make, payload


def _hub_calls(server) -> list[str]:
    return [method for method, path in server.calls if path == "/owner/demo/resolve/main/demo.safetensors"]


def test_hf_download_lands_verified_in_the_cache(hub_server) -> None:
    server, make, payload = hub_server
    make("hf://owner/demo/demo.safetensors")
    path = hub.resolve("demo")
    assert path == hub.cache_dir() / "demo.safetensors" and path.read_bytes() == payload
    assert _cache_files() == ["demo.safetensors"]
    assert "GET" in _hub_calls(server)


def test_hf_wrong_sha256_is_refused_and_nothing_is_left(hub_server) -> None:
    server, make, payload = hub_server
    make("hf://owner/demo/demo.safetensors", sha256="0" * 64)
    with pytest.raises(DataError, match="sha256 .* does not match"):
        hub.resolve("demo")
    assert _cache_files() == []


def test_hf_file_over_the_manifest_size_is_refused_before_its_body(hub_server) -> None:
    server, make, payload = hub_server
    make("hf://owner/demo/demo.safetensors", size=len(payload) - 1)
    with pytest.raises(DataError, match=r"declares 50,000 bytes, more than its bound of 49,999 bytes"):
        hub.resolve("demo")
    assert "GET" not in _hub_calls(server)  # huggingface_hub never fetched the body
    assert _cache_files() == []


def test_hf_copy_is_bounded_when_the_metadata_says_nothing(hub_server, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    server, make, payload = hub_server
    make("hf://owner/demo/demo.safetensors", size=len(payload) - 1)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", lambda url: (_ for _ in ()).throw(OSError("down")))
    with pytest.raises(DataError, match=r"huggingface_hub fetched 50,000 bytes .* bound of 49,999 bytes"):
        hub.resolve("demo")
    assert _cache_files() == []


# ---------------------------------------------------------------------------------------------- archives

def _files() -> dict[str, bytes]:
    rng = random.Random(1)
    return {name: b"\xff\xd8\xff\xe0" + rng.randbytes(5000) for name in NAMES}


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(f"{TOP}/{name}", data)
    return buf.getvalue()


def _declare_size(archive: bytes, member: str, size: int) -> bytes:
    """`archive` with the uncompressed size of `member` in its central directory replaced by `size`."""
    data = bytearray(archive)
    at = struct.unpack_from("<I", data, data.rindex(b"PK\x05\x06") + 16)[0]  # the central directory
    name = f"{TOP}/{member}".encode()
    while data[at:at + 4] == b"PK\x01\x02":
        name_len, extra, comment = struct.unpack_from("<HHH", data, at + 28)
        if bytes(data[at + 46:at + 46 + name_len]) == name:
            struct.pack_into("<I", data, at + 24, size)
            return bytes(data)
        at += 46 + name_len + extra + comment
    raise AssertionError(f"{member} is not in the archive")


def _fingerprint(tmp_path: Path, files: dict[str, bytes]) -> Path:
    path = tmp_path / "tiny.sha256"
    path.write_text("".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in files.items()), encoding="utf-8")
    return path


def test_zip_declaring_more_than_the_dataset_total_is_refused_before_writing(tmp_path: Path) -> None:
    files = _files()
    total = sum(map(len, files.values()))
    archive = tmp_path / "a.zip"
    dest = tmp_path / "out"
    dest.mkdir()
    archive.write_bytes(_declare_size(_zip(files), NAMES[1], 3 * 2**30))  # a member claims 3 GiB
    with pytest.raises(DataError, match=rf"declares 3,221,{'[0-9,]+'} bytes in 3 entries.*bound of {total:,} bytes"):
        extract_zip(archive, dest, wanted=files, max_bytes=total)
    assert list(dest.iterdir()) == []  # refused before any file was written
    archive.write_bytes(_zip(files))
    with pytest.raises(DataError, match="nothing was written"):
        extract_zip(archive, dest, wanted=files, max_bytes=total - 1)
    assert list(dest.iterdir()) == []
    assert extract_zip(archive, dest, wanted=files, max_bytes=total) == []
    assert {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()} == set(files)


def test_zip_over_the_unpacking_cap_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = _files()
    archive = tmp_path / "a.zip"
    archive.write_bytes(_zip(files))
    monkeypatch.setenv("MEDZOO_MAX_UNPACKED_BYTES", "1000")
    with pytest.raises(DataError, match="bound of 1,000 bytes .*MEDZOO_MAX_UNPACKED_BYTES"):
        extract_zip(archive, tmp_path / "out", wanted=files)
    assert not (tmp_path / "out").exists()


def test_zip_member_inflating_past_its_declared_size_is_refused(tmp_path: Path) -> None:
    files = _files()
    archive = tmp_path / "a.zip"
    archive.write_bytes(_declare_size(_zip(files), NAMES[0], 100))  # the member really holds 5004 bytes
    with pytest.raises(DataError, match=r"inflates past|damaged"):
        extract_zip(archive, tmp_path / "out", wanted=files, max_bytes=10**6)
    written = tmp_path / "out" / NAMES[0]
    assert not written.exists() or written.stat().st_size <= 100


def test_fetch_unpacks_only_fingerprinted_files_and_counts_the_others(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    files = _files()
    extra = {"README.md": b"read me", "Training/glioma_tumor/unlisted.jpg": b"\xff\xd8 not listed"}
    payload = _zip({**files, **extra})
    home = tmp_path / "home"
    with serve(payload) as server, caplog.at_level(logging.WARNING, logger="medzoo.datasets.fetch"):
        source = DatasetSource(name="tiny", url=server.url, folder="tiny-set", fingerprint=_fingerprint(tmp_path, files),
                               max_archive_bytes=len(payload), unpacked_bytes=sum(map(len, files.values())))
        path = fetch_dataset("tiny", home, source=source, progress=False)
    assert {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()} == set(files)
    assert "2 archive entry(ies) not listed" in caplog.text and "README.md" in caplog.text


def test_fetch_refuses_an_archive_over_its_registry_bounds_and_keeps_nothing(tmp_path: Path) -> None:
    files = _files()
    payload = _zip(files)
    home = tmp_path / "home"
    with serve(payload) as server:
        fingerprint = _fingerprint(tmp_path, files)
        small = DatasetSource(name="tiny", url=server.url, folder="tiny-set", fingerprint=fingerprint,
                              max_archive_bytes=len(payload) - 1)
        with pytest.raises(DataError, match=rf"{len(payload):,} bytes.*max_archive_bytes of dataset 'tiny'"):
            fetch_dataset("tiny", home, source=small, progress=False)
        assert os.listdir(home) == []
        short = DatasetSource(name="tiny", url=server.url, folder="tiny-set", fingerprint=fingerprint,
                              unpacked_bytes=sum(map(len, files.values())) - 1)
        with pytest.raises(DataError, match="not its archive"):
            fetch_dataset("tiny", home, source=short, progress=False)
        assert os.listdir(home) == []


def test_brain_tumor_registry_bounds() -> None:
    source = SOURCES["brain_tumor"]
    assert source.unpacked_bytes is not None and source.max_archive_bytes is not None
    assert source.unpacked_bytes < source.max_archive_bytes
    root = SHARED_DATA / "brain-tumor-mri"
    if not (root / "Training").is_dir():
        pytest.skip(f"no shared copy of the brain-tumour set at {root}")
    listed = read_fingerprint(source.fingerprint)
    assert sum((root / rel).stat().st_size for rel in listed) == source.unpacked_bytes


# ----------------------------------------------------------------------------------------------- bombs

def _peak_rss_reading(path: Path, function: str = "medzoo.datasets.readers.read_volume",
                      **kwargs) -> tuple[str, float]:
    """Read `path` with medzoo's `function` (a dotted name) in a grandchild process: (the one-line error or 'read',
    its peak RSS in MB).

    The peak is RUSAGE_CHILDREN of a small Python in between: a process's own peak counts the memory of the
    process it was forked from (pytest, here hundreds of MB), and so would the child's own figure.
    """
    module, name = function.rsplit(".", 1)
    reader = (
        "import sys\n"
        "from pathlib import Path\n"
        f"from {module} import {name} as read\n"
        "from medzoo.errors import DataError\n"
        "try:\n"
        f"    read(Path(sys.argv[1]), **{kwargs!r})\n"
        "    print('read')\n"
        "except DataError as exc:\n"
        "    print('DataError: ' + str(exc))\n"
    )
    between = (
        "import resource, subprocess, sys\n"
        "subprocess.run([sys.executable, '-c', sys.argv[1], sys.argv[2]], check=True)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)\n"  # kB on Linux
    )
    done = subprocess.run([sys.executable, "-c", between, reader, str(path)], capture_output=True, text=True,
                          timeout=120, cwd=REPO, check=True)
    outcome, peak = done.stdout.strip().rsplit("\n", 1)
    return outcome, float(peak)


def _zeros_deflated(count_mb: int) -> bytes:
    """Raw deflate blocks (no final block) that inflate to `count_mb` MiB of zeros, from one compressed MiB."""
    block = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    one = block.compress(bytes(MB)) + block.flush(zlib.Z_FULL_FLUSH)  # byte-aligned, no back references out
    return one * count_mb


def _inflated_size(compressed: bytes, wbits: int, stop_after: int) -> int:
    """How much `compressed` inflates to, counted a block at a time up to `stop_after`."""
    inflate, total, data = zlib.decompressobj(wbits), 0, compressed
    while data and total <= stop_after:
        total += len(inflate.decompress(data, MB))
        data = inflate.unconsumed_tail
    return total


def _deflated_dicom(path: Path, *, rows: int = 64, trailing_mb: int = 0) -> bytes:
    """A deflated DICOM file by hand: the plain file's meta (transfer syntax changed) and its data set deflated;
    `trailing_mb` MiB of zeros follow the pixel data as DataSetTrailingPadding (FFFC,FFFC)."""
    plain = path.with_suffix(".plain")
    write_dicom_slice(plain, np.arange(64 * 64, dtype=np.int16).reshape(64, 64), series_uid="1.2.3",
                      position=(0, 0, 0), orientation=(1, 0, 0, 0, 1, 0))
    raw = plain.read_bytes()
    ds = pydicom.dcmread(plain)
    plain.unlink()
    meta = io.BytesIO()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    write_file_meta_info(meta, ds.file_meta, enforce_standard=True)
    body = raw[file_meta(raw)[1]:]
    if rows != 64:  # the header claims another size (Rows is (0028,0010) US)
        at = body.index(struct.pack("<HH2sH", 0x0028, 0x0010, b"US", 2))
        body = body[:at + 8] + struct.pack("<H", rows) + body[at + 10:]
        at = body.index(struct.pack("<HH2sH", 0x0028, 0x0011, b"US", 2))  # Columns too
        body = body[:at + 8] + struct.pack("<H", rows) + body[at + 10:]
    head = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    stream = head.compress(body)
    if trailing_mb:
        stream += head.compress(struct.pack("<HH2sHI", 0xFFFC, 0xFFFC, b"OB", 0, trailing_mb * MB))
    stream += head.flush(zlib.Z_FULL_FLUSH) + _zeros_deflated(trailing_mb) + b"\x03\x00"  # an empty final block
    data = raw[:128] + b"DICM" + meta.getvalue() + stream
    path.write_bytes(data)
    return stream


def test_deflated_dicom_reads_like_the_plain_file(tmp_path: Path) -> None:
    _deflated_dicom(tmp_path / "deflated.dcm")
    volume = read_volume(tmp_path / "deflated.dcm")
    assert volume.meta["transfer_syntaxes"] == ["Deflated Explicit VR Little Endian"]
    np.testing.assert_array_equal(volume.array[0, 0], np.arange(64 * 64, dtype=np.int16).reshape(64, 64))
    ds = pydicom.dcmread(tmp_path / "deflated.dcm")  # the file is valid DICOM, not just readable by medzoo
    np.testing.assert_array_equal(ds.pixel_array, volume.array[0, 0])


def test_deflated_dicom_bomb_fails_within_a_memory_bound(tmp_path: Path) -> None:
    path = tmp_path / "bomb.dcm"
    stream = _deflated_dicom(path, trailing_mb=BOMB_INFLATED // MB)
    assert path.stat().st_size < 600 * 1024
    assert _inflated_size(stream, -zlib.MAX_WBITS, BOMB_INFLATED) > BOMB_INFLATED  # pydicom would hold all of it
    outcome, peak = _peak_rss_reading(path)
    assert outcome.startswith(f"DataError: {path}: the deflated data set inflates past") and "\n" not in outcome
    assert "the size its header describes (Rows=64 x Columns=64" in outcome
    assert peak < RSS_BOUND_MB, f"peak RSS {peak:.0f} MB"


def test_deflated_dicom_claiming_more_than_the_memory_cap_is_refused_before_its_pixels(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _deflated_dicom(tmp_path / "wide.dcm", rows=60000)
    monkeypatch.setattr(readers_base, "MAX_ARRAY_BYTES", 10**9)
    with pytest.raises(DataError, match=r"wide\.dcm: the header claims a deflated image of Rows=60000"):
        read_volume(tmp_path / "wide.dcm")


def test_deflated_dicom_medzoo_cannot_bound_is_refused_not_handed_to_pydicom(tmp_path: Path) -> None:
    _deflated_dicom(tmp_path / "full.dcm")
    (tmp_path / "bare.dcm").write_bytes((tmp_path / "full.dcm").read_bytes()[132:])  # no preamble, no DICM
    with pytest.raises(DataError, match="deflated DICOM file whose file meta medzoo cannot parse"):
        read_volume(tmp_path / "bare.dcm", force=True)


def _nifti(shape=(4, 4, 4)) -> bytes:
    image = nib.Nifti1Image(np.arange(np.prod(shape), dtype=np.uint8).reshape(shape), np.eye(4))
    return image.to_bytes()


def test_nii_gz_bomb_with_a_tiny_header_fails_within_a_memory_bound(tmp_path: Path) -> None:
    path = tmp_path / "bomb.nii.gz"
    tail = gzip.compress(bytes(MB), 9)  # gzip members may follow one another: each inflates to 1 MiB of zeros
    compressed = gzip.compress(_nifti(), 9) + tail * (BOMB_INFLATED // MB)
    path.write_bytes(compressed)
    assert path.stat().st_size < 600 * 1024
    with gzip.open(path) as fh:  # the stream is real, and nibabel alone reads the file without complaint
        assert sum(len(block) for block in iter(lambda: fh.read(8 * MB), b"")) > BOMB_INFLATED
    assert np.asanyarray(nib.load(path).dataobj).shape == (4, 4, 4)
    outcome, peak = _peak_rss_reading(path)
    assert outcome.startswith(f"DataError: {path}: the gzip stream goes on past") and "\n" not in outcome
    assert peak < RSS_BOUND_MB, f"peak RSS {peak:.0f} MB"


def test_nii_gz_with_a_little_padding_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "padded.nii.gz"
    path.write_bytes(gzip.compress(_nifti() + bytes(1000)))
    assert read_volume(path).array.shape == (1, 4, 4, 4)


# --------------------------------------------------------------------------------------- .npy and .npz

def _npy(shape: tuple[int, ...], data: bytes = b"", dtype: str = "|u1") -> bytes:
    """A .npy file by hand: a header claiming `shape` of `dtype`, then `data`, whatever its length."""
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": dtype, "fortran_order": False, "shape": shape})
    return head.getvalue() + data


def _medmnist_file(path: Path, train_images: bytes | None = None, zero_images: int = 0) -> Path:
    """A MedMNIST .npz of 4 grey 28 x 28 images a split; `train_images` replaces that member's bytes, or it is a
    real array of `zero_images` black images (a multiple of 1024), deflated as it is written: a bomb, small on disk."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for split in ("train", "val", "test"):
            if split == "train" and zero_images:
                with archive.open("train_images.npy", "w", force_zip64=True) as member:
                    member.write(_npy((zero_images, 28, 28)))
                    for _ in range(zero_images // 1024):
                        member.write(bytes(1024 * 28 * 28))
            else:
                images = train_images if split == "train" and train_images is not None else None
                archive.writestr(f"{split}_images.npy", images or _npy((4, 28, 28), bytes(4 * 28 * 28)))
            archive.writestr(f"{split}_labels.npy", _npy((4, 1), bytes(4)))
    return path


def test_medmnist_header_claiming_terabytes_is_one_line_naming_the_file(tmp_path: Path) -> None:
    # numpy sizes its buffer from the header alone: unchecked, this ended in a MemoryError traceback
    path = _medmnist_file(tmp_path / "crafted.npz", _npy((10**12, 28, 28), bytes(4 * 28 * 28)))
    assert path.stat().st_size < 20_000
    with pytest.raises(DataError) as info:
        read_medmnist(path)
    assert str(info.value).startswith(f"{path}: the header of array 'train_images' claims shape "
                                      "(1000000000000, 28, 28) of uint8, 784,000,000,000,000 bytes, but only 3,136 "
                                      "bytes follow it; the file is truncated or crafted.")
    done = run_medzoo("train", "data=medmnist", f"data.path={path}", "trainer.max_epochs=1",
                      f"hydra.run.dir={tmp_path / 'run'}", cwd=REPO)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [f"medzoo train: error: {info.value}"]


def test_medmnist_bomb_is_refused_within_a_memory_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    count = (BOMB_INFLATED // (1024 * 28 * 28) + 1) * 1024  # a real array, more than BOMB_INFLATED bytes
    path = _medmnist_file(tmp_path / "bomb.npz", zero_images=count)
    assert path.stat().st_size < 2 * MB
    monkeypatch.setenv(readers_base.MAX_ARRAY_ENV, str(64 * MB))  # the child inherits it: a small machine
    outcome, peak = _peak_rss_reading(path, "medzoo.datasets.readers.medmnist_file.read_medmnist")
    assert outcome.startswith(f"DataError: {path}: the header claims shape ({count}, 28, 28) of uint8 in array "
                              f"'train_images', {count * 784:,} bytes of data, more than the {64 * MB:,} bytes limit "
                              f"({readers_base.MAX_ARRAY_ENV}); refusing"), outcome
    assert "\n" not in outcome
    assert peak < RSS_BOUND_MB, f"peak RSS {peak:.0f} MB"


@pytest.mark.parametrize("member, reason", [
    (_npy((2, 8, 8), bytes(100)), r"claims shape \(2, 8, 8\) of uint8, 128 bytes, but only 100 bytes follow it"),
    (_npy((2, 8, 8), bytes(128), dtype="|O"), r"holds Python objects \(object\), which would need pickle"),
    (b"\x93NUMPY\x03\x00" + bytes(20), r"is in \.npy format version 3\.0, which medzoo does not read"),
    (b"not an array at all", r"has no readable \.npy header"),
], ids=["truncated", "objects", "version-3", "no-header"])
def test_npy_and_npz_headers_are_checked_before_numpy_reads(tmp_path: Path, member: bytes, reason: str) -> None:
    (tmp_path / "a.npy").write_bytes(member)
    with zipfile.ZipFile(tmp_path / "a.npz", "w") as archive:
        archive.writestr("image.npy", member)
    _medmnist_file(tmp_path / "m.npz", member)
    with pytest.raises(DataError, match=rf"a\.npy: (the header of )?the array {reason}"):
        read_volume(tmp_path / "a.npy", mmap=False)
    with pytest.raises(DataError, match=rf"a\.npz: (the header of )?array 'image' {reason}"):
        read_volume(tmp_path / "a.npz")
    with pytest.raises(DataError, match=rf"m\.npz: (the header of )?array 'train_images' {reason}"):
        read_medmnist(tmp_path / "m.npz")


def test_npz_and_medmnist_files_numpy_wrote_read_as_before(tmp_path: Path) -> None:
    image = np.arange(2 * 5 * 6, dtype=np.float32).reshape(2, 5, 6)
    np.savez_compressed(tmp_path / "a.npz", image=image)
    np.testing.assert_array_equal(read_volume(tmp_path / "a.npz").array, image)
    np.save(tmp_path / "a.npy", image)
    np.testing.assert_array_equal(read_volume(tmp_path / "a.npy", mmap=False).array, image)
    rng = np.random.default_rng(0)
    splits = {f"{s}_images": rng.integers(0, 255, (3, 28, 28, 3), dtype=np.uint8) for s in ("train", "val", "test")}
    np.savez(tmp_path / "m.npz", **splits, **{f"{s}_labels": np.array([[0], [1], [1]]) for s in ("train", "val", "test")})
    arrays = read_medmnist(tmp_path / "m.npz")
    np.testing.assert_array_equal(arrays["val"][0], splits["val_images"])
    np.testing.assert_array_equal(arrays["test"][1], [0, 1, 1])


# ------------------------------------------------------------------------------------------- memory cap

def test_memory_cap_follows_meminfo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       8000000 kB\nMemFree:         100000 kB\nMemAvailable:    2000000 kB\n")
    monkeypatch.setattr(readers_base, "MEMINFO", str(meminfo))
    assert readers_base.available_memory_bytes() == 2_000_000 * 1024
    limit, setting = readers_base.max_array_bytes()
    assert limit == int(2_000_000 * 1024 * readers_base.MEMORY_FRACTION)
    assert readers_base.MAX_ARRAY_ENV in setting
    readers_base.check_array_bytes(limit, "fine.nii", "shape (1,)")
    with pytest.raises(DataError, match=rf"big\.nii: the header claims shape \(9, 9\).*{readers_base.MAX_ARRAY_ENV}"):
        readers_base.check_array_bytes(limit + 1, "big.nii", "shape (9, 9)")
    meminfo.write_text("MemAvailable:    4000000 kB\n")  # read again at every check: it follows the machine
    assert readers_base.max_array_bytes()[0] == 2 * limit


def test_memory_cap_reads_sysconf_without_meminfo_and_obeys_the_env(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readers_base, "MEMINFO", str(tmp_path / "absent"))
    pages = {"SC_AVPHYS_PAGES": 1000, "SC_PAGE_SIZE": 4096}
    monkeypatch.setattr(readers_base.os, "sysconf", lambda name: pages[name])
    assert readers_base.max_array_bytes()[0] == int(4096 * 1000 * readers_base.MEMORY_FRACTION)
    monkeypatch.setattr(readers_base, "available_memory_bytes", lambda: 10**12)  # the reading function itself
    assert readers_base.max_array_bytes()[0] == int(10**12 * readers_base.MEMORY_FRACTION)
    monkeypatch.setenv(readers_base.MAX_ARRAY_ENV, "123456")
    assert readers_base.max_array_bytes() == (123456, readers_base.MAX_ARRAY_ENV)
    monkeypatch.setenv(readers_base.MAX_ARRAY_ENV, "-1")
    with pytest.raises(ConfigError, match=readers_base.MAX_ARRAY_ENV):
        readers_base.max_array_bytes()


def test_reading_a_volume_larger_than_the_memory_cap_is_refused(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "small.nii.gz"
    path.write_bytes(gzip.compress(_nifti((8, 8, 8))))
    monkeypatch.setattr(readers_base, "available_memory_bytes", lambda: 800)  # a cap of 400 bytes: 512 voxels
    with pytest.raises(DataError, match=r"small\.nii\.gz: the header claims shape \(8, 8, 8\)"):
        read_volume(path)

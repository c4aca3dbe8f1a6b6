"""Prepared cache: round trip from every reader, resume, damage and repair, skipping, the CLI, /dev/shm."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
import torch

from medzoo.datasets.prepared_source import PreparedSource
from medzoo.datasets.prepared_store import (
    FORMAT_VERSION,
    prepare,
    sources_from_csv,
    sources_from_folder,
)
from medzoo.datasets.prepared_store import writer as prepared_writer
from medzoo.datasets.readers import read_volume
from medzoo.errors import DataError
from medzoo.loading import shared_memory as shm
from medzoo.loading.loader import make_loader
from medzoo.transforms import multichannel as mc
from tests.dicom_builders import write_dicom_series
from tests.helpers import prepared_dataset

MEDZOO = shutil.which("medzoo", path=str(Path(sys.executable).parent)) or "medzoo"
SHAPE = (6, 12, 10)  # D, H, W


def stack(seed: int, shape=SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 3000, shape).astype(np.int16)


def write_series(folder: Path, volume: np.ndarray) -> None:
    """One MR file per slice (signed 16-bit), positions 2 mm apart, 0.5 mm pixels."""
    write_dicom_series(folder, volume, step=2.0, spacing=(0.5, 0.5), name="slice{index:03d}.dcm")


@pytest.fixture
def inputs(tmp_path) -> Path:
    """`<class>/<file or DICOM folder>` with one source of every reader."""
    root = tmp_path / "inputs"
    (root / "glioma").mkdir(parents=True)
    (root / "normal").mkdir(parents=True)
    nib.save(nib.Nifti1Image(stack(0).transpose(2, 1, 0), np.diag([0.8, 0.9, 2.0, 1.0])),
             root / "glioma" / "a.nii.gz")
    np.save(root / "glioma" / "b.npy", stack(1))
    tifffile.imwrite(root / "normal" / "c.tif", stack(2))
    write_series(root / "normal" / "d_series", stack(3))
    (root / "normal" / "notes.txt").write_text("not an image")
    return root


def counting_reader(monkeypatch, fail_after: int | None = None) -> list[str]:
    """Replace the cache's reader by one that records its calls and raises after `fail_after` of them."""
    calls: list[str] = []

    def reader(path, *args, **kwargs):
        if fail_after is not None and len(calls) >= fail_after:
            raise RuntimeError("simulated interruption")
        calls.append(Path(path).name)
        return read_volume(path, *args, **kwargs)

    monkeypatch.setattr(prepared_writer, "read_volume", reader)
    return calls


def test_round_trip_equals_the_readers_with_labels_and_manifest(inputs, tmp_path):
    sources, ignored = sources_from_folder(inputs)
    assert ignored == ["normal/notes.txt"] and len(sources) == 4
    manifest = prepare(sources, tmp_path / "cache", root=inputs, progress=False)
    assert manifest["complete"] and manifest["classes"] == ["glioma", "normal"]
    assert manifest["format_version"] == FORMAT_VERSION and manifest["checksum"] == "crc32"
    data = prepared_dataset(tmp_path / "cache", verify="full")
    assert data.store.keys == ["glioma/a.nii.gz", "glioma/b.npy", "normal/c.tif", "normal/d_series"]
    assert data.store.labels.tolist() == [0, 0, 1, 1] and data.store.classes == ["glioma", "normal"]
    for index, (path, _) in enumerate(sources):
        expected = read_volume(path).array
        image, label = data[index]
        assert image.dtype == torch.int16 and label == data.store.labels[index]
        np.testing.assert_array_equal(image.numpy(), expected)
        entry = manifest["samples"][index]
        assert entry["shape"] == list(expected.shape) and entry["dtype"] == "int16"
        assert entry["source"] == str(path) and len(entry["source_sha256"]) == 64
        assert entry["bytes"] == (tmp_path / "cache" / entry["file"]).stat().st_size
        assert len(entry["spacing"]) == expected.ndim - 1 and "orientation" in entry
    nifti = manifest["samples"][0]
    assert nifti["orientation"] == "SAR" and nifti["spacing"] == pytest.approx([2.0, 0.9, 0.8])
    assert manifest["samples"][3]["spacing"] == pytest.approx([2.0, 0.5, 0.5])
    total = sum(e["bytes"] for e in manifest["samples"])
    assert manifest["counts"] == {"samples": 4, "skipped": 0, "bytes": total}


def test_slices_layout_and_in_chans(inputs, tmp_path):
    sources, _ = sources_from_folder(inputs)
    prepare(sources, tmp_path / "cache", root=inputs, layout="slices", in_chans=6, progress=False)
    data = prepared_dataset(tmp_path / "cache")
    assert [tuple(image.shape) for image, _ in data] == [(6, 12, 10)] * 4 and data.store.in_chans == 6
    prepare(sources, tmp_path / "fit", root=inputs, layout="slices", channels=4, depth_mode="crop",
            progress=False)
    image, _ = prepared_dataset(tmp_path / "fit")[1]
    np.testing.assert_array_equal(image.numpy(), stack(1)[1:5])
    np.save(inputs / "normal" / "e.npy", stack(4, (8, 12, 10)))
    sources, _ = sources_from_folder(inputs)
    with pytest.raises(DataError, match=r"e\.npy: 8 channels .*expected 6.*channels=6 depth_mode"):
        prepare(sources, tmp_path / "bad", root=inputs, layout="slices", in_chans=6, progress=False)
    manifest = prepare(sources, tmp_path / "bad", root=inputs, layout="slices", in_chans=6,
                       on_error="skip", progress=False)
    assert [s["key"] for s in manifest["skipped"]] == ["normal/e.npy"] and manifest["counts"]["samples"] == 4


def test_interrupted_run_resumes_without_reading_finished_samples_again(inputs, tmp_path, monkeypatch):
    sources, _ = sources_from_folder(inputs)
    cache = tmp_path / "cache"
    counting_reader(monkeypatch, fail_after=2)
    with pytest.raises(RuntimeError, match="simulated"):
        prepare(sources, cache, root=inputs, progress=False)
    interim = json.loads((cache / "manifest.json").read_text())
    assert not interim["complete"] and interim["pending"] == 2 and len(interim["samples"]) == 2
    with pytest.raises(DataError, match="did not finish.*medzoo prepare"):
        prepared_dataset(cache)
    calls = counting_reader(monkeypatch)
    manifest = prepare(sources, cache, root=inputs, progress=False)
    assert calls == ["c.tif", "d_series"]
    assert manifest["complete"] and manifest["last_run"] == {**manifest["last_run"], "read": 2, "kept": 2}
    assert len(prepared_dataset(cache, verify="full")) == 4
    calls.clear()
    prepare(sources, cache, root=inputs, progress=False)
    assert calls == []
    # a changed source is read again; a deleted one keeps its intact prepared copy
    np.save(inputs / "glioma" / "b.npy", stack(9))
    shutil.rmtree(inputs / "normal" / "d_series")
    manifest = prepare(sources, cache, root=inputs, progress=False)
    assert calls == ["b.npy"] and manifest["counts"]["samples"] == 4
    np.testing.assert_array_equal(prepared_dataset(cache)[1][0].numpy(), stack(9))


def test_damaged_files_are_named_and_a_rerun_repairs_only_them(inputs, tmp_path, monkeypatch):
    sources, _ = sources_from_folder(inputs)
    cache = tmp_path / "cache"
    manifest = prepare(sources, cache, root=inputs, origin={"inputs": str(inputs)}, progress=False)
    flipped = cache / manifest["samples"][1]["file"]
    raw = bytearray(flipped.read_bytes())
    raw[-7] ^= 0xFF
    flipped.write_bytes(bytes(raw))
    prepared_dataset(cache, verify="size")  # same size, same header: only the checksum sees it
    with pytest.raises(DataError) as error:
        prepared_dataset(cache, verify="full")
    assert flipped.name in str(error.value) and "crc32" in str(error.value)
    assert f"medzoo prepare inputs={inputs} out={cache}" in str(error.value)
    truncated = cache / manifest["samples"][3]["file"]
    truncated.write_bytes(truncated.read_bytes()[:-100])
    with pytest.raises(DataError, match=rf"2 prepared sample file\(s\).*{truncated.name}.*truncated"):
        prepared_dataset(cache, verify="full")
    with pytest.raises(DataError, match=truncated.name):
        prepared_dataset(cache, verify="size")
    calls = counting_reader(monkeypatch)
    repaired = prepare(sources, cache, root=inputs, progress=False)
    assert sorted(calls) == ["b.npy", "d_series"] and repaired["last_run"]["repaired"] == 2
    data = prepared_dataset(cache, verify="full")
    for index in (1, 3):
        np.testing.assert_array_equal(data[index][0].numpy(), read_volume(sources[index][0]).array)


def test_unreadable_source_is_skipped_counted_and_listed(inputs, tmp_path):
    (inputs / "normal" / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    sources, _ = sources_from_folder(inputs)
    with pytest.raises(DataError, match=r"broken\.nii\.gz"):
        prepare(sources, tmp_path / "strict", root=inputs, progress=False)
    manifest = prepare(sources, tmp_path / "cache", root=inputs, on_error="skip", progress=False)
    assert manifest["counts"]["samples"] == 4 and manifest["counts"]["skipped"] == 1
    (skipped,) = manifest["skipped"]
    assert skipped["key"] == "normal/broken.nii.gz" and skipped["class"] == "normal" and skipped["error"]
    assert "normal/broken.nii.gz" not in prepared_dataset(tmp_path / "cache").store.keys


def test_csv_sources_and_seeded_transform_through_the_engine_loader(inputs, tmp_path):
    table = tmp_path / "labels.csv"
    table.write_text(f"path,label\n{inputs / 'glioma' / 'b.npy'},yes\nnormal/c.tif,no\n")
    (tmp_path / "normal").symlink_to(inputs / "normal")
    sources = sources_from_csv(table)
    assert [label for _, label in sources] == ["yes", "no"]
    prepare(sources, tmp_path / "cache", root=tmp_path, classes=["no", "yes"], progress=False)
    transform = mc.Compose([mc.HorizontalFlip(p=0.5), mc.RandomRotate90(p=0.5),
                            mc.GaussianNoise(std_range=(0.1, 0.1), p=1.0), mc.Normalize(mean=0.5, std=0.5)])
    data = prepared_dataset(tmp_path / "cache", transform=transform)
    assert data.store.labels.tolist() == [1, 0]
    first, again, other = data[(0, 7)][0], data[(0, 7)][0], data[(0, 8)][0]
    assert first.dtype == torch.float32 and torch.equal(first, again) and not torch.equal(first, other)
    batches = list(make_loader(data, 2, shuffle=True, seed=0, num_workers=0))
    assert len(batches) == 1 and batches[0][0].shape[0] == 2 and sorted(batches[0][1].tolist()) == [0, 1]


def test_cli_prepares_a_class_folder(inputs, tmp_path):
    cache = tmp_path / "cache"
    command = [MEDZOO, "prepare", f"inputs={inputs}", f"out={cache}", "progress=false",
               f"hydra.run.dir={tmp_path / 'run'}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "prepared 4 sample(s) in 2 class(es)" in result.stdout and "skipped 0" in result.stdout
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["samples"] == 4 and summary["ignored"] == 1 and summary["bytes"] > 4 * 2 * np.prod(SHAPE)
    assert len(prepared_dataset(cache, verify="full")) == 4


# ----------------------------------------------------------------------------- untrusted inputs and caches

@pytest.mark.parametrize(("table", "problem"), [
    ("path,label\nx.npy,tum\xe9or\n".encode("latin-1"), r"line 2: byte 0xe9 is not UTF-8"),
    (b"path,label\n" + b"a" * 200_000 + b".npy,x\n", r"line 2: not a valid CSV \(field larger"),
    (b"path,label\nx\x00.npy,a\n", r"line 2: a NUL character"),
    ("path,label\nx.npy,a\n".encode("utf-16"), r"line 1: byte 0xff is not UTF-8"),
    (b"path,label\nx.npy\n", r"line 2: no value in column\(s\) \['label'\]"),
], ids=["latin1", "overlong_field", "nul", "utf16", "short_row"])
def test_a_labels_csv_that_is_not_a_clean_utf8_csv_is_one_data_error(tmp_path, table, problem):
    (tmp_path / "labels.csv").write_bytes(table)
    with pytest.raises(DataError, match=r"labels\.csv, " + problem) as caught:
        sources_from_csv(tmp_path / "labels.csv")
    assert "\n" not in str(caught.value) and "labels=FILE.csv" in str(caught.value)


def test_links_out_of_the_inputs_folder_are_not_followed(inputs, tmp_path, caplog):
    outside = tmp_path / "outside"
    outside.mkdir()
    np.save(outside / "secret.npy", stack(9))
    write_series(outside / "series", stack(8))
    (inputs / "glioma" / "link.npy").symlink_to(outside / "secret.npy")
    (inputs / "glioma" / "series_link").symlink_to(outside / "series")  # would pass for a DICOM series
    (inputs / "elsewhere").symlink_to(outside)  # a class folder outside
    (inputs / "normal" / "inside.npy").symlink_to(inputs / "glioma" / "b.npy")  # inside: followed
    with caplog.at_level(logging.WARNING):
        sources, ignored = sources_from_folder(inputs)
    names = {Path(path).name for path, _ in sources}
    assert "inside.npy" in names and not names & {"link.npy", "series_link", "secret.npy", "series"}
    assert {"elsewhere", "glioma/link.npy", "glioma/series_link"} <= set(ignored)
    assert f"glioma/link.npy (symlink to {outside / 'secret.npy'}, outside" in caplog.text


def test_a_dicom_slice_linked_from_outside_its_series_folder_is_refused(tmp_path):
    write_series(tmp_path / "series", stack(3))
    last = sorted((tmp_path / "series").iterdir())[-1]
    last.rename(tmp_path / "outside.dcm")
    last.symlink_to(tmp_path / "outside.dcm")
    with pytest.raises(DataError, match=rf"{last.name}: a symbolic link to .*outside\.dcm, outside the"):
        read_volume(tmp_path / "series")


def test_a_sample_file_named_through_another_file_is_reported_missing(inputs, tmp_path):
    sources, _ = sources_from_folder(inputs)
    prepare(sources, tmp_path / "cache", root=inputs, progress=False)
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    manifest["samples"][0]["file"] += "/y.npy"
    (tmp_path / "cache" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"1 prepared sample file\(s\) missing.*\.npy/y\.npy "
                                        r"\(glioma/a\.nii\.gz\): missing"):
        prepared_dataset(tmp_path / "cache")


def test_an_empty_cache_is_one_data_error_when_trained_on(inputs, tmp_path):
    sources, _ = sources_from_folder(inputs)
    prepare(sources, tmp_path / "cache", root=inputs, progress=False)
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    manifest["samples"] = []
    (tmp_path / "cache" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"cache: the prepared cache holds no samples, nothing to train"):
        PreparedSource(str(tmp_path / "cache")).load()


def test_a_samples_folder_that_is_a_link_is_neither_written_nor_read(inputs, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "important.tmp").write_text("user data")
    (tmp_path / "hostile").mkdir()
    (tmp_path / "hostile" / "samples").symlink_to(victim)
    sources, _ = sources_from_folder(inputs)
    with pytest.raises(DataError, match=r"hostile/samples: a symbolic link \(to .*victim\)"):
        prepare(sources, tmp_path / "hostile", root=inputs, progress=False)
    assert [p.name for p in victim.iterdir()] == ["important.tmp"]
    cache = tmp_path / "cache"
    prepare(sources, cache, root=inputs, progress=False)
    (cache / "samples").rename(victim / "moved")
    (cache / "samples").symlink_to(victim / "moved")
    with pytest.raises(DataError, match=r"cache/samples: a symbolic link"):
        prepared_dataset(cache)


def test_an_out_folder_that_cannot_hold_the_cache_is_one_line_and_the_file_is_kept(inputs, tmp_path):
    sources, _ = sources_from_folder(inputs)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "samples").write_text("user data")
    (tmp_path / "a_file").write_text("user data")
    with pytest.raises(DataError, match=r"taken/samples: a file, where the cache keeps its samples folder"):
        prepare(sources, tmp_path / "taken", root=inputs, progress=False)
    with pytest.raises(DataError, match=r"a_file: cannot make the cache folder there \(Not a directory\)"):
        prepare(sources, tmp_path / "a_file", root=inputs, progress=False)
    assert (tmp_path / "taken" / "samples").read_text() == (tmp_path / "a_file").read_text() == "user data"


# ----------------------------------------------------------------------------- /dev/shm and loader settings

MB = 10**6


@pytest.mark.parametrize(("free", "expected"), [
    (None, (4, 2)),            # nothing to check (no /dev/shm): as asked
    (100_000 * MB, (4, 2)),    # fits
    (6_000 * MB, (4, 1)),      # 4 x 2 x 4 x 262 MB = 8.4 GB does not fit in 80% of 6 GB; 4 x 1 batches do
    (3_000 * MB, (2, 1)),      # two workers with one batch each
    (1_000 * MB, (0, None)),   # not even one batch: load in the training process
])
def test_shm_check_lowers_prefetch_then_workers(monkeypatch, caplog, free, expected):
    monkeypatch.setattr(shm, "shm_free_bytes", lambda path=shm.SHM_PATH: free)
    with caplog.at_level(logging.WARNING, logger="medzoo.loading.shared_memory"):
        settings = shm.loader_settings(262 * MB, batch_size=4, num_workers=4, device="cpu", prefetch_factor=2)
    assert (settings["num_workers"], settings["prefetch_factor"]) == expected
    assert settings["persistent_workers"] == (expected[0] > 0) and settings["pin_memory"] is False
    if expected == (4, 2):
        assert not caplog.records
    else:
        message = caplog.records[0].getMessage()
        assert "4 worker(s) x prefetch_factor 2 x batch 4 x 262.0 MB" in message and "8.38 GB" in message
        assert "loader.num_workers" in message and "loader.batch_size" in message and "--shm-size" in message


def test_loader_settings_pin_memory_for_cuda_only_and_prefetch_by_batch_size(monkeypatch):
    monkeypatch.setattr(shm, "shm_free_bytes", lambda path=shm.SHM_PATH: None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert shm.loader_settings(MB, 8, 2, "cuda:0")["pin_memory"] is True
    assert shm.loader_settings(MB, 8, 2, torch.device("cpu"))["pin_memory"] is False
    assert shm.loader_settings(MB, 8, 2, "cuda")["prefetch_factor"] == shm.PREFETCH_SMALL
    assert shm.loader_settings(262 * MB, 8, 2, "cuda")["prefetch_factor"] == shm.PREFETCH_LARGE
    assert shm.loader_settings(MB, 8, 0, "cuda") == {"num_workers": 0, "pin_memory": True,
                                                      "persistent_workers": False, "prefetch_factor": None}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert shm.loader_settings(MB, 8, 2, "cuda")["pin_memory"] is False


def test_real_shm_probe_reports_the_free_space_statvfs_reports(tmp_path):
    """Free bytes for unprivileged users (f_bavail x f_frsize), as `df` shows them; None only without the path.

    Other processes write to both file systems meanwhile, so the two readings may differ by a little."""
    for path in (shm.SHM_PATH, tmp_path):
        if not path.exists():  # macOS and Windows have no /dev/shm
            assert shm.shm_free_bytes(path) is None
            continue
        stat = os.statvfs(path)
        free = shm.shm_free_bytes(path)
        assert isinstance(free, int)
        assert abs(free - stat.f_bavail * stat.f_frsize) <= 64 * 2**20, (path, free, stat)
    assert shm.shm_free_bytes(tmp_path / "no such folder") is None

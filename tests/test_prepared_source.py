"""A prepared cache as a recipe's data (`data=prepared`): splits, lazily read samples, and `medzoo train`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medzoo.datasets.dataset import ArrayDataset
from medzoo.datasets.prepared_source import PreparedSource
from medzoo.datasets.prepared_store import MappedSamples, prepare
from medzoo.errors import DataError
from medzoo.loading.batch_ring import BatchRing
from medzoo.transforms.multichannel import Compose, Normalize
from tests.test_batch_ring import as_worker
from tests.test_cli import TINY, medzoo


def stacks(folder: Path, per_class: int = 8, shape=(6, 16, 16), seed: int = 0) -> Path:
    """<class>/<n>.npy int16 stacks whose class shows in their mean (so a model can learn it)."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(("calm", "bright")):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            array = rng.integers(0, 1000, shape) + 1500 * label
            np.save(folder / name / f"{index}.npy", array.astype(np.int16))
    return folder


def cache_of(tmp_path: Path, name: str = "cache", **kwargs) -> Path:
    folder = stacks(tmp_path / f"{name}-src", **kwargs)
    sources = [(path, path.parent.name) for path in sorted(folder.glob("*/*.npy"))]
    prepare(sources, tmp_path / name, classes=["calm", "bright"], progress=False)
    return tmp_path / name


def test_splits_are_stratified_and_samples_stay_in_the_cache(tmp_path):
    cache = cache_of(tmp_path, per_class=10)
    splits = PreparedSource(str(cache), val_fraction=0.2, test_fraction=0.2).load()
    sizes = [len(s.labels) for s in (splits.train, splits.val, splits.test)]
    assert sum(sizes) == 20 and sizes[1] == sizes[2] == 4
    assert all(np.bincount(s.labels).tolist() == [len(s.labels) // 2] * 2 for s in (splits.val, splits.test))
    keys = [k for s in (splits.train, splits.val, splits.test) for k in s.keys]
    assert len(set(keys)) == 20  # every sample in exactly one split
    assert isinstance(splits.train.images, MappedSamples) and splits.in_chans == 6 and splits.input_size == [16, 16]
    first = splits.train.images[0]
    assert isinstance(first, np.memmap) and not first.flags.writeable  # read where it lies, when used
    stacked = np.asarray(splits.val.images)  # what a device cache asks for
    assert stacked.shape == (4, 6, 16, 16) and stacked.dtype == np.int16
    for row, key in zip(stacked, splits.val.keys, strict=True):
        np.testing.assert_array_equal(row, np.load(tmp_path / "cache-src" / key))
    again = PreparedSource(str(cache), val_fraction=0.2, test_fraction=0.2).load()
    assert again.train.keys == splits.train.keys and again.fingerprint == splits.fingerprint
    assert splits.fingerprint.startswith("prepared-sha256:")


def test_a_second_cache_is_the_test_split_and_must_share_the_classes(tmp_path):
    train, test = cache_of(tmp_path, "train"), cache_of(tmp_path, "test", per_class=3, seed=1)
    splits = PreparedSource(str(train), test_path=str(test)).load()
    assert len(splits.test.labels) == 6 and len(splits.train.labels) + len(splits.val.labels) == 16
    other = tmp_path / "other"
    source = stacks(tmp_path / "other-src", per_class=2)
    prepare([(p, p.parent.name) for p in sorted(source.glob("*/*.npy"))], other, progress=False)  # classes sorted
    with pytest.raises(DataError, match="differ from .* prepare both with the same classes"):
        PreparedSource(str(train), test_path=str(other)).load()


def test_a_split_too_small_for_every_class_names_the_setting(tmp_path):
    with pytest.raises(DataError, match=r"data.test_fraction=0.15 of 6 samples leaves 1 and 5, fewer than the 2"):
        PreparedSource(str(cache_of(tmp_path, per_class=3))).load()


def test_samples_of_different_shapes_are_an_error_that_names_the_fix(tmp_path):
    folder = stacks(tmp_path / "src", per_class=3)
    np.save(folder / "calm" / "odd.npy", np.zeros((6, 12, 16), np.int16))
    prepare([(p, p.parent.name) for p in sorted(folder.glob("*/*.npy"))], tmp_path / "cache", progress=False)
    with pytest.raises(DataError, match=r"differ in shape .*data.channels=N .*ResizeWithPadOrCrop"):
        PreparedSource(str(tmp_path / "cache"), val_fraction=0.3, test_fraction=0.3).load()


def test_the_engine_dataset_builds_prepared_samples_in_the_slot(tmp_path, monkeypatch):
    splits = PreparedSource(str(cache_of(tmp_path))).load()
    data = ArrayDataset(splits.train, Compose([Normalize(normalization="min_max")]))
    ring = BatchRing(data[(0, 1)][0], batch_size=2, workers=1, prefetch_factor=1)
    as_worker(monkeypatch)
    samples = ring.fetch(data, [(3, 5), (1, 6)])
    for row, (image, label), item in zip(ring.slots[samples.slot], samples, [(3, 5), (1, 6)], strict=True):
        assert image.data_ptr() == row.data_ptr()
        expected, expected_label = data[item]
        assert torch.equal(image, expected) and label == expected_label
    plain = ArrayDataset(splits.train, None)  # no transform: float32, copied from the memory map into the row
    image, _ = plain.getitem_into(2, ring.slots[0, 0])
    assert image.data_ptr() == ring.slots[0, 0].data_ptr() and torch.equal(image, plain[2][0])


def test_medzoo_trains_and_evaluates_from_a_prepared_cache(tmp_path):
    source = stacks(tmp_path / "src", per_class=12)
    medzoo("prepare", f"inputs={source}", f"out={tmp_path / 'cache'}", "progress=false",
           f"hydra.run.dir={tmp_path / 'prep'}")
    settings = [item for item in TINY if not item.startswith(("transforms.", "loader.num_workers="))]
    run = tmp_path / "run"
    medzoo("train", "data=prepared", f"data.path={tmp_path / 'cache'}", "transforms=stack_2d5_aug", *settings,
           "loader.num_workers=1", "loader.batch_ring=true", "trainer.max_epochs=2", "logger.plots=false",
           f"hydra.run.dir={run}")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and sum(map(sum, metrics["test"]["confusion_matrix"])) == 4
    card_data = json.loads((run / "data_report.json").read_text())
    assert card_data["source"] == str(tmp_path / "cache")
    assert "batch ring: " in (run / "cli.log").read_text()
    evaluation = tmp_path / "eval"
    medzoo("eval", f"ckpt={run / 'checkpoints' / 'best.safetensors'}", f"data.path={tmp_path / 'cache'}", "split=test",
           f"hydra.run.dir={evaluation}")  # the data the user names: a card's recorded paths are not used
    assert json.loads((evaluation / "metrics.json").read_text())["test"] == metrics["test"]


def test_evaluating_on_a_cache_with_other_channels_names_the_fix(tmp_path):
    source = stacks(tmp_path / "src", per_class=6)
    medzoo("prepare", f"inputs={source}", f"out={tmp_path / 'cache'}", "progress=false",
           f"hydra.run.dir={tmp_path / 'prep'}")
    settings = [item for item in TINY if not item.startswith("transforms.")]
    medzoo("train", "data=prepared", f"data.path={tmp_path / 'cache'}", "transforms=stack_2d5_aug", *settings,
           "trainer.max_epochs=1", "logger.plots=false", f"hydra.run.dir={tmp_path / 'run'}")
    other = stacks(tmp_path / "other-src", per_class=8, shape=(4, 16, 16))
    medzoo("prepare", f"inputs={other}", f"out={tmp_path / 'other'}", "progress=false",
           f"hydra.run.dir={tmp_path / 'prep2'}")
    result = medzoo("eval", f"ckpt={tmp_path / 'run' / 'checkpoints' / 'best.safetensors'}",
                    f"data.path={tmp_path / 'other'}", "split=test", f"hydra.run.dir={tmp_path / 'eval'}", check=False)
    assert result.returncode != 0
    assert "the data has 4 channel(s), the checkpoint expects 6" in result.stderr
    assert "data.channels=6" in result.stderr


def test_predict_lays_a_volume_out_as_the_prepared_cache_did(tmp_path):
    """A 2.5D model trained from `prepare data.layout=slices data.channels=6` on NIfTI volumes predicts on a
    NIfTI file exactly what `medzoo eval` computed for the sample prepared from it."""
    import csv

    import nibabel as nib

    rng = np.random.default_rng(0)
    for label, name in enumerate(("calm", "bright")):
        (tmp_path / "src" / name).mkdir(parents=True)
        for index in range(8):
            volume = (rng.integers(0, 1000, (16, 16, 10)) + 1500 * label).astype(np.int16)  # x, y, z: 10 slices
            nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "src" / name / f"{index}.nii.gz")
    medzoo("prepare", f"inputs={tmp_path / 'src'}", f"out={tmp_path / 'cache'}", "data.layout=slices",
           "data.channels=6", "progress=false", f"hydra.run.dir={tmp_path / 'prep'}")
    settings = [item for item in TINY if not item.startswith("transforms.")]
    medzoo("train", "data=prepared", f"data.path={tmp_path / 'cache'}", "data.test_fraction=0.25",
           "transforms=stack_2d5_aug", *settings, "trainer.max_epochs=1", "logger.plots=false",
           f"hydra.run.dir={tmp_path / 'run'}")
    ckpt = tmp_path / "run" / "checkpoints" / "best.safetensors"
    medzoo("eval", f"ckpt={ckpt}", f"data.path={tmp_path / 'cache'}", "split=test", f"hydra.run.dir={tmp_path / 'eval'}")
    with (tmp_path / "eval" / "predictions_test.csv").open() as handle:
        evaluated = {row["key"]: row for row in csv.DictReader(handle)}
    key = sorted(evaluated)[0]
    medzoo("predict", f"ckpt={ckpt}", f"inputs={tmp_path / 'src' / key}", f"hydra.run.dir={tmp_path / 'predict'}")
    rows = json.loads((tmp_path / "predict" / "predictions.json").read_text())["predictions"]
    assert len(rows) == 1  # one prediction for the volume, not one per slice
    for name, probability in rows[0]["probabilities"].items():
        assert probability == pytest.approx(float(evaluated[key][f"p_{name}"]), abs=1e-5)

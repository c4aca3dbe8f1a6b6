"""Any MedMNIST file with one command: `medzoo train data=medmnist data.path=FILE.npz` reads 2D grey, 2D RGB and
3D files, takes the classes and the layout from the file, shapes the model by the data, trains with the MedMNIST v2
protocol, and refuses multi-label sets, bad labels and incomplete files in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from medzoo.datasets.medmnist import MedMNISTSource
from medzoo.errors import ConfigError, DataError
from medzoo.zoo.checkpoint import read_card
from tests.conftest import SHARED_DATA
from tests.test_cli import medzoo

FAST = ["trainer.max_epochs=1", "model=resnet10", "model.width=0.25", "loader.batch_size=8", "loader.eval_batch_size=16",
        "trainer.progress=false", "trainer.precision=fp32", "logger.loggers=[csv]", "logger.plots=false"]


def write_medmnist(path: Path, image_shape: tuple[int, ...], classes: int, counts=(24, 8, 8), **replace) -> Path:
    """A MedMNIST-format file: uint8 images, labels (N, 1) cycling through the classes; `replace` swaps arrays."""
    rng = np.random.default_rng(classes)
    arrays = {}
    for split, count in zip(("train", "val", "test"), counts):
        arrays[f"{split}_images"] = rng.integers(0, 256, (count, *image_shape), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(count) % classes).astype(np.uint8).reshape(count, 1)
    arrays.update(replace)
    np.savez(path, **{key: value for key, value in arrays.items() if value is not None})
    return path


# (how the command names the data, image shape per sample, classes, in_chans, spatial_dims, layout on the card)
CASES = {
    "grey_3class_by_bare_name": ("data=medmnist", (28, 28), 3, 1, 2, "image"),
    "rgb_binary_by_generic_recipe": ("recipe=medmnist_resnet18", (28, 28, 3), 2, 3, 2, "image"),
    "volume_binary": ("data=medmnist", (28, 28, 28), 2, 1, 3, "volume"),
}


@pytest.mark.parametrize("case", CASES)
def test_any_medmnist_file_trains_with_one_command(tmp_path, case):
    choice, shape, classes, in_chans, spatial_dims, layout = CASES[case]
    data_home, run = tmp_path / "data", tmp_path / "run"
    (data_home / "medmnist").mkdir(parents=True)
    npz = write_medmnist(data_home / "medmnist" / f"{case}.npz", shape, classes)
    path = case if case.endswith("bare_name") else str(npz)  # the bare name is found under $MEDZOO_DATA/medmnist
    medzoo("train", choice, f"data.path={path}", *FAST, f"hydra.run.dir={run}", env={"MEDZOO_DATA": str(data_home)})

    metrics = json.loads((run / "metrics.json").read_text())
    names = [str(i) for i in range(classes)]  # no info file, no known set: 0..K-1 from the labels
    assert np.array(metrics["test"]["confusion_matrix"]).shape == (classes, classes)
    assert np.array(metrics["test"]["confusion_matrix"]).sum() == 8 and list(metrics["test"]["per_class"]) == names
    card = read_card(run / "checkpoints" / "best.safetensors")
    assert (card.in_chans, card.spatial_dims, card.num_classes, list(card.classes)) == (in_chans, spatial_dims,
                                                                                       classes, names)
    assert card.input.layout == layout and card.input.size == shape[:spatial_dims]
    with safe_open(run / "checkpoints" / "best.safetensors", "pt") as weights:  # the model, not only the card
        stem = weights.get_slice("conv1.weight").get_shape()
    assert stem[1] == in_chans and len(stem) == 2 + spatial_dims
    report = json.loads((run / "data_report.json").read_text())
    assert report["layout"] == layout and report["task"] == ("binary-class" if classes == 2 else "multi-class")
    config = card.provenance.config  # the MedMNIST v2 protocol came with the data config
    assert config["optim"]["_target_"] == "torch.optim.Adam" and config["sched"]["name"] == "multistep"
    assert config["transforms"]["train"][0]["_target_"] == "monai.transforms.ScaleIntensityRange"


def test_data_medmnist_brings_the_protocol_and_the_command_line_still_wins():
    job = medzoo("train", "data=medmnist", "data.path=x.npz", "--cfg", "job").stdout
    assert "max_epochs: 100" in job and "_target_: torch.optim.Adam" in job and "name: multistep" in job
    job = medzoo("train", "data=medmnist", "data.path=x.npz", "optim=adamw", "trainer.max_epochs=3", "--cfg",
                 "job").stdout
    assert "_target_: torch.optim.AdamW" in job and "max_epochs: 3" in job


def one_line_failure(tmp_path: Path, *settings: str) -> str:
    result = medzoo("train", *settings, *FAST, f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr[-2000:]
    return lines[0]


def test_a_multi_label_file_is_refused_in_one_line(tmp_path):
    rng = np.random.default_rng(0)  # ChestMNIST's labels: one 0/1 column per finding
    labels = {f"{split}_labels": rng.integers(0, 2, (n, 14), dtype=np.uint8)
              for split, n in (("train", 24), ("val", 8), ("test", 8))}
    npz = write_medmnist(tmp_path / "chestmnist.npz", (28, 28), 2, **labels)
    line = one_line_failure(tmp_path, "data=medmnist", f"data.path={npz}")
    assert str(npz) in line and "multi-label" in line and "not supported" in line and "multi-class" in line


@pytest.mark.parametrize("fault", ["label_out_of_range", "missing_key", "no_path"])
def test_bad_labels_a_missing_key_or_no_path_fail_in_one_line(tmp_path, fault):
    if fault == "label_out_of_range":  # the info file names 2 classes, a test label says 5
        npz = write_medmnist(tmp_path / "set.npz", (28, 28), 2, test_labels=np.array([[0], [1], [5]] * 2 + [[0]] * 2))
        (tmp_path / "set.json").write_text(json.dumps({"task": "binary-class", "label": {"0": "a", "1": "b"}}))
        line = one_line_failure(tmp_path, "data=medmnist", f"data.path={npz}")
        assert str(npz) in line and "label 5 is out of range" in line and "2 classes" in line
    elif fault == "missing_key":
        npz = write_medmnist(tmp_path / "set.npz", (28, 28), 2, val_labels=None)
        line = one_line_failure(tmp_path, "data=medmnist", f"data.path={npz}")
        assert str(npz) in line and "missing key(s) val_labels" in line
    else:
        line = one_line_failure(tmp_path, "data=medmnist")
        assert "data.path is not set" in line and "data.path=FILE.npz" in line


@pytest.mark.parametrize("labels", [np.array([0, 1, -1, 0, 1, 0, 1, 0]), np.array([0, 1.5, 0, 1, 0, 1, 0, 1])])
def test_negative_or_fractional_labels_are_refused(tmp_path, labels):
    npz = write_medmnist(tmp_path / "set.npz", (28, 28), 2, val_labels=labels)
    with pytest.raises(DataError, match="val_labels"):
        MedMNISTSource(path=str(npz)).load()


def test_a_bare_name_resolves_under_medzoo_data_or_names_both_places(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDZOO_DATA", str(tmp_path))
    (tmp_path / "medmnist").mkdir()
    write_medmnist(tmp_path / "medmnist" / "tinymnist.npz", (28, 28), 2)
    for setting in ("tinymnist", "tinymnist.npz"):
        assert MedMNISTSource(path=setting).load().report["source"] == str(tmp_path / "medmnist" / "tinymnist.npz")
    with pytest.raises(DataError, match=r"data.path=othermnist: .*medmnist/othermnist.npz.*MEDZOO_DATA"):
        MedMNISTSource(path="othermnist").load()
    with pytest.raises(ConfigError, match="data.path is not set"):
        MedMNISTSource()


def test_class_names_from_the_info_file_a_known_set_or_the_labels(tmp_path):
    npz = write_medmnist(tmp_path / "pathology.npz", (28, 28, 3), 3)
    assert MedMNISTSource(path=str(npz)).load().classes == ["0", "1", "2"]
    (tmp_path / "pathology.json").write_text(json.dumps(  # MedMNIST's own INFO entry
        {"task": "multi-class", "label": {"0": "adipose", "1": "background", "2": "debris"}, "n_channels": 3}))
    loaded = MedMNISTSource(path=str(npz)).load()
    assert loaded.classes == ["adipose", "background", "debris"] and loaded.report["task"] == "multi-class"
    assert MedMNISTSource(classes=["x", "y", "z"], path=str(npz)).load().classes == ["x", "y", "z"]
    known = write_medmnist(tmp_path / "pneumoniamnist_64.npz", (64, 64), 2)
    assert MedMNISTSource(path=str(known)).load().classes == ["normal", "pneumonia"]
    (tmp_path / "pathology.json").write_text(json.dumps({"task": "multi-label, binary-class", "label": {}}))
    with pytest.raises(DataError, match="multi-label MedMNIST sets are not supported"):
        MedMNISTSource(path=str(npz)).load()
    (tmp_path / "pathology.json").write_text("[" * 100_000 + "]" * 100_000)  # under the size bound, too deep
    with pytest.raises(DataError, match=r"pathology\.json: cannot read the info file \(maximum recursion"):
        MedMNISTSource(path=str(npz)).load()


@pytest.mark.parametrize("name, shape, classes, expected", [
    ("bloodmnist_64", (64, 64, 3), 8, ("basophil", "immature_granulocytes_myelocytes_metamyelocytes_and_promyelocytes",
                                       "platelet", "multi-class")),
    ("organmnist3d", (28, 28, 28), 11, ("liver", "femur_right", "pancreas", "multi-class")),
    ("retinamnist", (28, 28, 3), 5, ("0", "3", "4", "ordinal-regression")),
    ("organamnist", (28, 28), 12, ("0", "3", "11", "multi-class")),  # 12 classes: not the official 11 organs
])
def test_every_official_set_gets_its_official_class_names_and_task(tmp_path, name, shape, classes, expected):
    loaded = MedMNISTSource(path=str(write_medmnist(tmp_path / f"{name}.npz", shape, classes))).load()
    assert (loaded.classes[0], loaded.classes[3 if classes > 4 else 1], loaded.classes[-1],
            loaded.report["task"]) == expected
    assert len(loaded.classes) == classes


def test_the_official_sets_table_is_complete_and_its_names_are_card_names():
    from medzoo.datasets.medmnist import known_sets
    from medzoo.zoo.card_schema import _CLASS_NAME

    sets = known_sets()
    assert len(sets) == 18 and sum(name.endswith("3d") for name in sets) == 6  # MedMNIST v2: 12 2D + 6 3D sets
    for name, entry in sets.items():
        assert entry["task"] in ("binary-class", "multi-class", "ordinal-regression", "multi-label, binary-class")
        assert len(set(entry["classes"])) == len(entry["classes"]) >= 2, name
        assert all(_CLASS_NAME.fullmatch(c) and c == c.lower() and " " not in c for c in entry["classes"]), name
    assert sets["breastmnist"]["classes"] == ["malignant", "normal_benign"]  # the published checkpoint's names
    assert sets["adrenalmnist3d"]["classes"] == ["normal", "hyperplasia"]


def test_layout_follows_the_file_or_the_setting(tmp_path):
    volume = write_medmnist(tmp_path / "vol.npz", (16, 20, 24), 2)
    auto = MedMNISTSource(path=str(volume)).load()
    assert auto.train.images.shape[1:] == (1, 16, 20, 24) and auto.spatial_dims == 3
    stack = MedMNISTSource(path=str(volume), layout="slices").load()
    assert stack.in_chans == 16 and stack.input_size == [20, 24] and stack.spatial_dims == 2
    rgb = MedMNISTSource(path=str(write_medmnist(tmp_path / "rgb.npz", (28, 28, 3), 2))).load()
    assert rgb.train.images.shape[1:] == (3, 28, 28) and rgb.spatial_dims == 2 and rgb.report["layout"] == "image"
    with pytest.raises(ConfigError, match="data.layout"):
        MedMNISTSource(path=str(volume), layout="3d")


def test_the_shipped_pneumoniamnist_recipe_reads_the_real_file(monkeypatch):
    if not (SHARED_DATA / "medmnist" / "pneumoniamnist.npz").is_file():
        pytest.skip(f"PneumoniaMNIST not found under {SHARED_DATA / 'medmnist'} (set MEDZOO_TEST_DATA to shared/data)")
    monkeypatch.setenv("MEDZOO_DATA", str(SHARED_DATA))
    splits = MedMNISTSource(name="pneumoniamnist", file="pneumoniamnist.npz").load()
    assert splits.classes == ["normal", "pneumonia"] and len(splits.train.labels) == 4708
    assert "file: pneumoniamnist.npz" in medzoo("train", "recipe=pneumoniamnist_resnet18", "--cfg", "job").stdout

"""The extension points of docs/architecture.md, used as a newcomer would: a model, a reader, a transform step and
a recipe of one's own, each one file in a folder outside the package, reach `medzoo prepare` and `medzoo train`
through `imports=[...]` and `hydra.searchpath=[file://DIR]`, and a run trains on them."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medzoo.cli import import_user_modules
from medzoo.datasets.readers import registry as readers
from medzoo.errors import ConfigError, UnknownNameError
from medzoo.recipes import check_recipe
from medzoo.zoo.checkpoint import read_card

REPO = Path(__file__).resolve().parents[1]
MEDZOO = shutil.which("medzoo", path=str(Path(sys.executable).parent)) or "medzoo"
SIDE = 16
PER_CLASS = 12
MAGIC = b"TOY1"

# Each extension point in one file, as docs/architecture.md shows it.
TOY_MODEL = '''
"""A toy model family: one conv, global pooling, a linear head."""
import torch
from torch import nn

from medzoo.zoo import register_model


class ToyNet(nn.Module):
    def __init__(self, in_chans: int, num_classes: int):
        super().__init__()
        self.arch, self.stem = "toynet", "auto"  # what the model card records
        self.conv = nn.Conv2d(in_chans, 8, 3, padding=1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


@register_model
def toynet(in_chans: int = 3, num_classes: int = 1000, spatial_dims: int = 2, **options) -> ToyNet:
    return ToyNet(in_chans, num_classes)
'''

# `.toy`: b"TOY1", height, width (one byte each), then the pixels stored inverted (255 - value), so that only
# this reader gives back the image that was written.
TOY_READER = '''
"""A reader for `.toy` files."""
from pathlib import Path

import numpy as np

from medzoo.datasets.readers import make_volume, register_reader


def read_toy(path, **options):
    """toy image: b"TOY1", height, width, inverted uint8 pixels"""
    raw = Path(path).read_bytes()
    if raw[:4] != b"TOY1":
        raise ValueError(f"{path}: not a toy file")
    height, width = raw[4], raw[5]
    pixels = 255 - np.frombuffer(raw[6:], np.uint8).reshape(1, height, width)
    return make_volume(pixels, path, spacing=None)


register_reader("toy", read_toy, [".toy"])
'''

TOY_STEP = '''
"""A transform step that shifts intensities and counts its calls in a file (the test reads the count)."""
import numpy as np

from medzoo.transforms.registry import register_step


class Shift:
    def __init__(self, offset: float = 0.0, record: str | None = None):
        self.offset, self.record = offset, record

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if self.record:
            with open(self.record, "a") as handle:
                handle.write("+")
        return image.astype(np.float32) + self.offset


register_step("toylab.Shift", Shift)
'''

TOY_RECIPE = '''# @package _global_
# Toy: the toy model on a prepared cache of .toy files, with the toy step (tests/test_extension_points.py).
# Command:  PYTHONPATH=LAB medzoo train recipe=toy hydra.searchpath=[file://LAB] imports=[toy_model,toy_step] data.path=CACHE
defaults:
  - override /data: prepared

recipe_name: toy
model:
  name: toynet
transforms:
  backend: channel_first
  pre: []
  train:
    - _target_: toylab.Shift
      offset: 0.5
      record: {record}
  eval: []
loader:
  batch_size: 4
  num_workers: 0
trainer:
  max_epochs: 1
  precision: fp32
'''

TOY_SOURCE = '''
"""A source kind of one's own: every PNG of one folder, its class and patient in its name (CLASS_PATIENT_N.png)."""
from pathlib import Path

from medzoo.datasets.folder_scan import FileRecord
from medzoo.datasets.multisource import SourceKind, register_source_kind


class FlatFolder:
    def __init__(self, root: str):
        self.root = Path(root)


def files(data, name, source):
    """(train, test) records: every PNG trains; this kind has no test split of its own."""
    paths = sorted(source.root.glob("*.png"))
    classes = sorted({p.stem.split("_")[0] for p in paths})
    index = dict(zip(classes, data.class_indices(name, classes)))
    return [FileRecord(p, index[p.stem.split("_")[0]], f"{name}:{p.name}") for p in paths], []


def parts(data, name, source):
    """The files, each patient's images one group (never split across train and val), no de-leaked test."""
    train, test = files(data, name, source)
    return train, test, {r.key: f"{name}:patient:{r.path.stem.split('_')[1]}" for r in train}, None


register_source_kind("flat_folder", SourceKind(
    FlatFolder, make=lambda name, settings, cache_dir, clean_split: FlatFolder(**settings),
    files=files, parts=parts, root=lambda source: source.root, patients_known=True))
'''

TWO_SITES = '''# Two sites in one vocabulary: an image folder (Training/, Testing/) and a flat folder of one's own kind.
_target_: medzoo.datasets.multisource.MultiSourceData
name: two_sites
classes: [bottom, top]
sources:
  site_a: {kind: image_folder, root: null}
  site_b: {kind: flat_folder, root: null}
channels: 1
val_fraction: 0.25
balance: source_class
cache: memory
'''


def medzoo(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([MEDZOO, *args], capture_output=True, text=True, env={**os.environ, **env}, timeout=600)


def toy_bytes(pixels: np.ndarray) -> bytes:
    return MAGIC + bytes(pixels.shape) + (255 - pixels).astype(np.uint8).tobytes()


def write_lab(lab: Path, record: Path) -> None:
    """The four extension files, one each."""
    (lab / "recipe").mkdir(parents=True)
    (lab / "toy_model.py").write_text(TOY_MODEL)
    (lab / "toy_reader.py").write_text(TOY_READER)
    (lab / "toy_step.py").write_text(TOY_STEP)
    (lab / "recipe" / "toy.yaml").write_text(TOY_RECIPE.format(record=record))


def write_toy_images(inputs: Path) -> dict[str, np.ndarray]:
    """Two learnable classes of .toy files (bright top half or bright bottom half); key -> pixels written."""
    rng = np.random.default_rng(0)
    written = {}
    for label, name in enumerate(("bottom", "top")):
        (inputs / name).mkdir(parents=True)
        for index in range(PER_CLASS):
            pixels = rng.integers(0, 60, (SIDE, SIDE), dtype=np.uint8)
            rows = slice(0, SIDE // 2) if label else slice(SIDE // 2, SIDE)
            pixels[rows] += 150
            (inputs / name / f"{index:02d}.toy").write_bytes(toy_bytes(pixels))
            written[f"{name}/{index:02d}.toy"] = pixels
    return written


def test_a_model_reader_step_and_recipe_of_ones_own_train_through_the_cli(tmp_path):
    lab, record, inputs, cache = tmp_path / "lab", tmp_path / "calls.txt", tmp_path / "inputs", tmp_path / "cache"
    write_lab(lab, record)
    assert sorted(p.relative_to(lab).as_posix() for p in lab.rglob("*") if p.is_file()) == \
        ["recipe/toy.yaml", "toy_model.py", "toy_reader.py", "toy_step.py"]
    written = write_toy_images(inputs)
    env = {"PYTHONPATH": str(lab)}

    # the reader: `medzoo prepare` picks it by suffix and the cache holds what it decoded
    prepared = medzoo("prepare", f"inputs={inputs}", f"out={cache}", "imports=[toy_reader]", "progress=false",
                      f"hydra.run.dir={tmp_path / 'prepare'}", env=env)
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["classes"] == ["bottom", "top"] and len(manifest["samples"]) == 2 * PER_CLASS
    for entry in manifest["samples"]:
        sample = np.load(cache / entry["file"])
        assert sample.shape == (1, SIDE, SIDE) and sample.dtype == np.uint8
        np.testing.assert_array_equal(sample[0], written[entry["key"]])

    # the recipe (found through the search path), the model and the step: one epoch
    run = tmp_path / "train"
    trained = medzoo("train", "recipe=toy", f"hydra.searchpath=[file://{lab}]", "imports=[toy_model,toy_step]",
                     f"data.path={cache}", "trainer.progress=false", "logger.plots=false", "logger.loggers=[csv]",
                     f"hydra.run.dir={run}", env=env)
    assert trained.returncode == 0, trained.stderr[-3000:]
    card = read_card(run / "checkpoints" / "best.safetensors")
    assert card.arch == "toynet" and card.recipe == "toy" and card.classes == ("bottom", "top")
    assert card.provenance.config["trainer"]["max_epochs"] == 1 and card.input.size == (SIDE, SIDE)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and sum(map(sum, metrics["test"]["confusion_matrix"])) > 0
    # the step ran once per training sample of the epoch (batches of 4; the last partial one is dropped)
    assert card.provenance.num_train > 4
    assert len(record.read_text()) == card.provenance.num_train // 4 * 4


def test_without_the_extension_points_the_run_names_what_is_missing(tmp_path):
    """Each extension point is needed: no search path, no recipe; no import, no step; no module, an error naming
    it and PYTHONPATH."""
    lab = tmp_path / "lab"
    write_lab(lab, tmp_path / "calls.txt")
    env = {"PYTHONPATH": str(lab)}
    common = ["data.path=nowhere", f"hydra.run.dir={tmp_path / 'run'}"]
    no_recipe = medzoo("train", "recipe=toy", "imports=[toy_model,toy_step]", *common, env=env)
    assert no_recipe.returncode == 2 and "unknown recipe 'toy'" in no_recipe.stderr
    assert "hydra.searchpath=[file://DIR]" in no_recipe.stderr
    no_step = medzoo("train", "recipe=toy", f"hydra.searchpath=[file://{lab}]", "imports=[toy_model]", *common,
                     env=env)
    assert no_step.returncode == 2 and "transform step 'toylab.Shift' is not allowed" in no_step.stderr
    assert "imports=[MODULE]" in no_step.stderr
    no_module = medzoo("train", "recipe=toy", f"hydra.searchpath=[file://{lab}]", "imports=[toy_modle]", *common,
                       env=env)
    assert no_module.returncode == 2 and "no module 'toy_modle'" in no_module.stderr and "PYTHONPATH" in no_module.stderr


def test_a_source_kind_of_ones_own_joins_a_multi_source_data_config_through_the_cli(tmp_path):
    """A hospital's own layout as a third kind of source: one file registering it, one data config naming it,
    and `medzoo train` reports it per source and keeps each of its patients on one side of validation."""
    lab = tmp_path / "lab"
    (lab / "data").mkdir(parents=True)
    (lab / "toy_source.py").write_text(TOY_SOURCE)
    (lab / "data" / "two_sites.yaml").write_text(TWO_SITES)
    rng = np.random.default_rng(0)

    def image(label: int):
        pixels = rng.integers(0, 60, (SIDE, SIDE), dtype=np.uint8)
        pixels[slice(0, SIDE // 2) if label else slice(SIDE // 2, SIDE)] += 150
        return Image.fromarray(pixels)

    for split, count in (("Training", 12), ("Testing", 4)):
        for label, name in enumerate(("bottom", "top")):
            (tmp_path / "site_a" / split / name).mkdir(parents=True)
            for index in range(count):
                image(label).save(tmp_path / "site_a" / split / name / f"{index}.png")
    (tmp_path / "site_b").mkdir()
    for patient in range(8):
        for label, name in enumerate(("bottom", "top")):
            for index in range(2):
                image(label).save(tmp_path / "site_b" / f"{name}_p{patient}_{index}.png")

    run = tmp_path / "run"
    trained = medzoo("train", "recipe=demo", "data=two_sites", f"hydra.searchpath=[file://{lab}]",
                     "imports=[toy_source]", f"data.sources.site_a.root={tmp_path / 'site_a'}",
                     f"data.sources.site_b.root={tmp_path / 'site_b'}", "trainer.max_epochs=1",
                     "trainer.progress=false", "logger.plots=false", "logger.loggers=[csv]", f"hydra.run.dir={run}",
                     env={"PYTHONPATH": str(lab)})
    assert trained.returncode == 0, trained.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"val_site_a", "val_site_b"} <= set(metrics)
    report = json.loads((run / "data_report.json").read_text())
    assert report["sources"]["site_b"] == {"train_files": 32, "test_files": 0, "patients_known": True,
                                           "near_duplicate_groups": False}
    val_b = {row["key"] for row in csv.DictReader((run / "predictions_val_site_b.csv").open())}
    val_patients = {Path(key.split(":", 1)[1]).stem.split("_")[1] for key in val_b}  # site_b:CLASS_PATIENT_N.png
    assert val_b and len(val_b) == 4 * len(val_patients)  # each validation patient with all four of its images
    # without the import, the data config's kind is refused in one line naming the setting
    missing = medzoo("train", "recipe=demo", "data=two_sites", f"hydra.searchpath=[file://{lab}]",
                     f"data.sources.site_a.root={tmp_path / 'site_a'}", f"hydra.run.dir={tmp_path / 'run2'}",
                     env={"PYTHONPATH": str(lab)})
    assert missing.returncode == 2 and "data.sources.site_b.kind='flat_folder'" in missing.stderr

# ----------------------------------------------------------------------------- in-process checks

def read_here(path, **options):
    """a reader defined at module level (found again by module:name)"""
    return readers.make_volume(np.zeros((1, 2, 2), np.uint8), path, None)


def test_register_reader_adds_a_suffix_and_refuses_clashes(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "READERS", dict(readers.READERS))  # registered here only for this test
    spec = readers.register_reader("here", read_here, [".here"])
    assert readers.READERS["here"] is spec and spec.target == f"{__name__}:read_here"
    (tmp_path / "a.here").write_bytes(b"x")
    assert readers.reader_for(tmp_path / "a.here").name == "here"
    assert readers.read_volume(tmp_path / "a.here").array.shape == (1, 2, 2)
    assert readers.register_reader("here", read_here, [".here"]) == spec  # the same registration again is harmless

    with pytest.raises(ConfigError, match="'.npy' already belongs to reader 'npy'"):
        readers.register_reader("mine", read_here, [".npy"])
    with pytest.raises(ConfigError, match="already registered"):
        readers.register_reader("npy", read_here, [".other"])

    def nested(path, **options):
        return read_here(path)

    with pytest.raises(ConfigError, match="top level of an importable module"):
        readers.register_reader("nested", nested, [".nested"])
    with pytest.raises(ConfigError, match="lower case and start with a dot"):
        readers.register_reader("caps", read_here, ["CAPS"])
    assert set(readers.READERS) == {"nifti", "dicom", "tiff", "npy", "npz", "image", "medmnist", "here"}


def test_a_recipe_in_a_search_path_folder_passes_the_name_check(tmp_path):
    (tmp_path / "recipe").mkdir()
    (tmp_path / "recipe" / "mine.yaml").write_text("# @package _global_\nrecipe_name: mine\n")
    check_recipe("mine", [f"file://{tmp_path}"])
    with pytest.raises(UnknownNameError, match="Did you mean: mine"):
        check_recipe("mien", [f"file://{tmp_path}"])
    with pytest.raises(UnknownNameError, match="unknown recipe 'mine'"):
        check_recipe("mine")
    (tmp_path / "recipe" / "demo.yaml").write_text("# @package _global_\n")
    with pytest.raises(ConfigError, match="name of a recipe shipped with medzoo"):
        check_recipe("demo", [f"file://{tmp_path}"])


def test_imports_take_module_names_only():
    import_user_modules([])
    import_user_modules(["json"])
    for wrong in ("json", ["../lab/toy.py"], [1]):
        with pytest.raises(ConfigError, match="a list of module names"):
            import_user_modules(wrong)
    with pytest.raises(ConfigError, match="no module 'nosuch_lab.models'"):
        import_user_modules(["nosuch_lab.models"])


def test_the_architecture_page_documents_these_extension_points():
    page = (REPO / "docs" / "architecture.md").read_text()
    for needle in ("@register_model", "register_step(", "register_reader(", "hydra.searchpath=[file://",
                   "imports=[", "recipe/", "medzoo/zoo/registry.py", "medzoo/transforms/registry.py",
                   "medzoo/datasets/readers/registry.py", "tests/test_extension_points.py",
                   "register_source_kind(", "medzoo/datasets/multisource.py"):
        assert needle in page, f"docs/architecture.md no longer mentions {needle}"

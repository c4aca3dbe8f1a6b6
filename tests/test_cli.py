"""The real `medzoo` entry point: help, config printing, errors with close names, train -> eval -> predict."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medzoo.zoo.checkpoint import read_card
from tests.cli_runner import run_medzoo
from tests.helpers import make_image_folder

MEDZOO = shutil.which("medzoo", path=str(Path(sys.executable).parent)) or "medzoo"
TINY = ["transforms.image_size=32", "model=resnet10", "loader.batch_size=8", "loader.num_workers=0",
        "trainer.progress=false", "optim.lr=3e-3"]


def medzoo(*args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """`medzoo *args` in this process (tests/cli_runner.py); `check`: fail the test on a non-zero exit code."""
    result = run_medzoo(*args, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"medzoo {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("data") / "brain-tumor-mri", per_class_train=10, per_class_test=4)


def test_help_lists_commands_and_recipes():
    """The one test through the installed console script; the others call `cli.main` in process (cli_runner.py)."""
    out = subprocess.run([MEDZOO, "--help"], capture_output=True, text=True, check=True, timeout=120).stdout
    for word in ("train", "eval", "predict", "brain_tumor_resnet18", "brain_tumor_resnet18_cpu", "demo"):
        assert word in out


def test_help_gives_each_recipe_its_whole_first_sentence(tmp_path):
    from medzoo.cli import USAGE_WIDTH, usage
    from medzoo.recipes import describe, recipe_files

    header = tmp_path / "mine.yaml"
    header.write_text("# @package _global_\n# Demo: a long first sentence that runs over\n# two comment lines (lr x0.1)."
                      " Second sentence.\n# Command:  medzoo train recipe=mine\ntrainer: {}\n")
    assert describe(header) == "Demo: a long first sentence that runs over two comment lines (lr x0.1)."
    printed = usage()
    assert max(len(line) for line in printed.splitlines()) <= USAGE_WIDTH
    folded = " ".join(printed.split())
    for name, path in recipe_files().items():
        sentence = describe(path)
        assert sentence.endswith((".", ")")) and "Command:" not in sentence, name
        assert f"{name} {' '.join(sentence.split())}" in folded, name


def test_unknown_recipe_and_command_suggest_close_names():
    result = medzoo("train", "recipe=brain_tumor_resnet81", check=False)
    assert result.returncode != 0 and "Did you mean: brain_tumor_resnet18" in result.stderr
    result = medzoo("trian", check=False)
    assert result.returncode != 0 and "Did you mean: train" in result.stderr


def test_cfg_job_prints_the_resolved_recipe():
    out = medzoo("train", "recipe=brain_tumor_resnet18_cpu", "--cfg", "job").stdout
    assert "recipe_name: brain_tumor_resnet18_cpu" in out and "_target_: medzoo.datasets" in out


def test_missing_data_root_names_the_setting(tmp_path):
    result = medzoo("train", "recipe=brain_tumor_resnet18", f"data.root={tmp_path / 'nope'}",
                    f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert result.returncode == 2 and "data.root" in result.stderr and "MEDZOO_DATA" in result.stderr


def test_unknown_model_name_suggests_close_names(tmp_path, synthetic_root):
    result = medzoo("train", "recipe=brain_tumor_resnet18", f"data.root={synthetic_root}", *TINY,
                    "model.name=resnt18", f"hydra.run.dir={tmp_path}", check=False)
    assert result.returncode == 2 and "Did you mean: resnet18" in result.stderr


@pytest.mark.parametrize(("setting", "key"), [
    ("trainer.precision=fp9", "trainer.precision"),
    ("data.on_error=ignore", "data.on_error"),
    ("data.val_fraction=1.5", "data.val_fraction"),
    ("data.cache=cloud", "data.cache"),
    ("trainer.freeze=[nosuchlayer]", "trainer.freeze"),
    ("trainer.max_epochs=-1", "trainer.max_epochs"),
    ("+trainer.max_epoch=1", "trainer.max_epoch"),
    ("loader.batch_size=0", "loader.batch_size"),
    ("model=resnet51", "Did you mean: resnet50"),
    ("+data.bogus=1", "'bogus'"),
])
def test_a_wrong_setting_is_one_line_naming_the_key(tmp_path, synthetic_root, setting, key):
    result = medzoo("train", "recipe=brain_tumor_resnet18", f"data.root={synthetic_root}", *TINY, setting,
                    f"hydra.run.dir={tmp_path}", check=False)
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("[")]
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and len(lines) == 1 and key in lines[0], result.stderr[-2000:]


def test_train_eval_predict_end_to_end(tmp_path, synthetic_root):
    run = tmp_path / "train"
    medzoo("train", "recipe=brain_tumor_resnet18", f"data.root={synthetic_root}", *TINY, "model.width=0.5",
           "trainer.max_epochs=2", f"hydra.run.dir={run}")
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["test"]) >= {"accuracy", "balanced_accuracy", "macro_f1", "auc", "per_class",
                                    "confusion_matrix"}
    assert sum(map(sum, metrics["test"]["confusion_matrix"])) == 16
    for name in ("curves.png", "confusion_test.png", "metrics.csv", "data_report.json"):
        assert (run / name).exists(), name
    assert list((run / "tensorboard").iterdir())
    ckpt = run / "checkpoints" / "best.safetensors"
    card = read_card(ckpt)
    assert list(card.classes) == ["glioma_tumor", "meningioma_tumor", "no_tumor", "pituitary_tumor"]
    assert card.in_chans == 1 and card.metrics["test"]["accuracy"] == metrics["test"]["accuracy"]
    assert card.recipe == "brain_tumor_resnet18" and card.provenance.config["trainer"]["max_epochs"] == 2
    assert card.model_kwargs["width"] == 0.5  # eval and predict below rebuild the half-width model from it
    assert [layer["feature_layer"] for layer in card.ood["layers"]][-1] == "fc" and card.ood["num_val"] == card.provenance.num_val

    evaluation = tmp_path / "eval"
    medzoo("eval", f"ckpt={ckpt}", f"data.root={synthetic_root}", "split=test", f"hydra.run.dir={evaluation}")
    evaluated = json.loads((evaluation / "metrics.json").read_text())
    assert evaluated["test"]["accuracy"] == metrics["test"]["accuracy"]
    assert evaluated["test"]["confusion_matrix"] == metrics["test"]["confusion_matrix"]
    with (evaluation / "predictions_test.csv").open() as handle:
        per_sample = list(csv.DictReader(handle))
    assert len(per_sample) == evaluated["test"]["num_samples"] == 16
    assert {row["key"].split("/")[0] for row in per_sample} == {"Testing"}
    assert all(row["key"].split("/")[1] == row["label"] for row in per_sample)  # split/class/file
    assert np.mean([int(row["correct"]) for row in per_sample]) == pytest.approx(evaluated["test"]["accuracy"])
    medzoo("eval", f"ckpt={ckpt}", f"data.root={synthetic_root}", "split=val", f"hydra.run.dir={tmp_path / 'ev'}")
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["val"]["accuracy"] == metrics["val"]["accuracy"]

    predictions = tmp_path / "predict"
    medzoo("predict", f"ckpt={ckpt}", f"inputs={synthetic_root / 'Testing'}", f"hydra.run.dir={predictions}")
    rows = json.loads((predictions / "predictions.json").read_text())["predictions"]
    assert len(rows) == 16 and all(abs(sum(r["probabilities"].values()) - 1) < 1e-4 for r in rows)
    header = (predictions / "predictions.csv").read_text().splitlines()[0]
    assert header == "path,prediction,glioma_tumor,meningioma_tumor,no_tumor,pituitary_tumor,ood_score,ood"
    assert all(isinstance(r["ood"], bool) for r in rows)  # trainer.ood (default true) put a summary in the card

    # volumes: a NIfTI stack gives one prediction per slice for this 2D model; Grad-CAM overlays as PNG
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(synthetic_root / "Testing" / "no_tumor" / "img (0).jpg", mixed / "one.jpg")
    volume = np.stack([np.asarray(Image.open(mixed / "one.jpg").convert("L"))] * 3, axis=-1)
    nib.save(nib.Nifti1Image(volume.astype(np.int16), np.eye(4)), mixed / "stack.nii.gz")
    medzoo("predict", f"ckpt={ckpt}", f"inputs={mixed}", "explain=gradcam", f"hydra.run.dir={tmp_path / 'pv'}")
    rows = json.loads((tmp_path / "pv" / "predictions.json").read_text())["predictions"]
    assert len(rows) == 4 and sum("#slice" in r["path"] for r in rows) == 3
    assert all(Path(r["gradcam"]).is_file() for r in rows)


def test_multirun_sweep_writes_one_run_dir_per_value(tmp_path, synthetic_root):
    medzoo("-m", check=False)  # `-m` alone is not a command: must not crash the parser
    medzoo("train", "-m", "recipe=brain_tumor_resnet18", f"data.root={synthetic_root}", *TINY,
           "trainer.max_epochs=1", "seed=0,1", f"hydra.sweep.dir={tmp_path}", "evaluate_test=false",
           "logger.plots=false")
    assert sorted(p.name for p in tmp_path.iterdir() if (p / "metrics.json").exists()) == ["0", "1"]


def test_finetune_recipe_adapts_the_published_checkpoint(tmp_path):
    run = tmp_path / "run"
    out = medzoo("train", "recipe=finetune", "transforms.image_size=32", "trainer.max_epochs=1",
                 "trainer.progress=false", "logger.plots=false", f"hydra.run.dir={run}")
    card = read_card(run / "checkpoints" / "best.safetensors")
    assert list(card.classes) == ["malignant", "normal_benign"] and card.num_classes == 2
    log = (run / "cli.log").read_text() + out.stderr + out.stdout
    # The published weights were loaded, and the 4-class head replaced by a 2-class one (zoo.adapt's log line).
    loaded = [line for line in log.splitlines() if "loaded " in line and "brain_tumor_resnet18_cpu" in line]
    assert loaded and "adapted: fc: new head 4 -> 2 classes" in loaded[0], log[-3000:]


@pytest.mark.parametrize(("setting", "expected"), [
    ("explain=gradcm", "Did you mean: gradcam"),
    ("on_error=ignore", "on_error=ignore"),
    ("batch_size=0", "batch_size=0"),
])
def test_predict_refuses_a_wrong_setting_before_any_work(tmp_path, setting, expected):
    image = tmp_path / "scan.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(image)
    result = medzoo("predict", "ckpt=breastmnist_resnet18", f"inputs={image}", setting,
                    f"hydra.run.dir={tmp_path / 'run'}", check=False)
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("[")]
    assert result.returncode == 2 and len(lines) == 1 and expected in lines[0], result.stderr[-2000:]
    assert not (tmp_path / "run" / "predictions.csv").exists()


def test_predict_names_its_own_key_for_skipping_bad_files(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = medzoo("predict", "ckpt=breastmnist_resnet18", f"inputs={broken}", f"hydra.run.dir={tmp_path / 'run'}",
                    check=False)
    assert result.returncode == 2 and "on_error=skip" in result.stderr and "data.on_error" not in result.stderr

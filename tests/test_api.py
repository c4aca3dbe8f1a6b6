"""The Python API (medzoo.api, re-exported at the top of the package) does what the command line does, with the
same names, and gives the same numbers: load/predict against `medzoo predict`, train/evaluate against the run's
files, audit against the audit's own files."""

from __future__ import annotations

import csv
import json
import logging
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import medzoo
from medzoo.errors import ConfigError, MedzooError, UnknownNameError
from tests.test_cli import medzoo as medzoo_cli

SHIPPED = "brain_tumor_resnet18_cpu"
FAST = ("model=resnet10", "model.width=0.25", "trainer.precision=fp32", "loader.num_workers=0", "trainer.progress=false")


def brain_like_images(folder, count=3, seed=0):
    """Grey JPEGs of odd sizes with a bright blob (the shipped brain checkpoint reads 1 channel, crops, resizes)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        height, width = 180 + 17 * index, 150 + 11 * index
        pixels = (rng.random((height, width)) * 40).astype(np.uint8)
        pixels[40:120, 30 + index * 5:110] = 200
        path = folder / f"scan ({index}).jpg"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def test_the_top_level_names_are_the_api_and_import_lazily():
    out = subprocess.run([sys.executable, "-c", "import sys, medzoo; print('torch' in sys.modules, "
                          "'hydra' in sys.modules); medzoo.load; print('torch' in sys.modules)"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False", "True"], "import medzoo must not import torch or hydra until a name is used"
    for name in ("train", "evaluate", "load", "audit", "create_model", "list_models"):
        assert callable(getattr(medzoo, name)) and getattr(medzoo, name).__doc__, name
    assert medzoo.Predictor.predict.__doc__ and medzoo.Predictor.explain.__doc__
    assert "resnet18" in medzoo.list_models() and medzoo.create_model("resnet10", num_classes=3).fc.out_features == 3
    # medzoo.audit is also the audit's package, bound to that name whenever a module of it is imported: still callable
    script = ("import medzoo.audit.report, medzoo; from medzoo.audit.settings import AuditSettings; "
              "print(callable(medzoo.audit), medzoo.audit.report.__name__)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "medzoo.audit.report"]
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        medzoo.trian  # noqa: B018


def test_zoo_list_and_info_are_what_the_command_prints(capsys):
    listed = {entry["name"]: entry for entry in medzoo.zoo.list()}
    assert SHIPPED in listed and listed[SHIPPED]["where"] == "packaged"
    info = medzoo.zoo.info(SHIPPED)
    assert info["classes"] == ["glioma_tumor", "meningioma_tumor", "no_tumor", "pituitary_tumor"]
    assert listed[SHIPPED]["test"]["accuracy"] == pytest.approx(info["metrics"]["test"]["accuracy"])
    printed = json.loads(medzoo_cli("zoo", "info", f"name={SHIPPED}").stdout)
    assert printed == json.loads(json.dumps(info, default=str))
    with pytest.raises(UnknownNameError, match=f"Did you mean: {SHIPPED}"):
        medzoo.zoo.info("brain_tumor_resnet18_cp")


def test_load_predict_equals_medzoo_predict_for_paths_lists_folders_and_arrays(tmp_path):
    paths = brain_like_images(tmp_path / "in")
    medzoo_cli("predict", f"ckpt={SHIPPED}", *map(str, paths), f"hydra.run.dir={tmp_path / 'run'}")
    written = json.loads((tmp_path / "run" / "predictions.json").read_text())["predictions"]

    model = medzoo.load(SHIPPED, device="cpu")
    assert model.card.classes == tuple(model.classes) and model.card.in_chans == 1
    one = model.predict(str(paths[0]))  # a plain string
    listed = model.predict(paths)
    folder = model.predict(tmp_path / "in")
    arrays = model.predict([np.asarray(Image.open(path)) for path in paths])
    assert len(one) == 1 and len(listed) == len(folder) == len(arrays) == len(written) == 3
    assert [row["path"] for row in listed] == [row["path"] for row in written] == [row["path"] for row in folder]
    assert [row["path"] for row in arrays] == ["array[0]", "array[1]", "array[2]"]
    for rows in ([*one, *listed[1:]], listed, folder, arrays):
        for mine, theirs in zip(rows, written):
            assert mine["prediction"] == theirs["prediction"]
            assert set(mine["probabilities"]) == set(model.classes)
            for name, p in theirs["probabilities"].items():
                assert mine["probabilities"][name] == pytest.approx(p, abs=1e-6)
            assert mine["ood_score"] == pytest.approx(theirs["ood_score"], rel=1e-6)
            assert mine["ood"] == theirs["ood"]


def test_explain_gives_a_map_at_the_input_size_for_the_asked_class(tmp_path):
    path = brain_like_images(tmp_path, count=1)[0]
    model = medzoo.load(SHIPPED, device="cpu")
    heat = model.explain(path)
    size = tuple(model.card.input.size)
    assert heat.shape == size and 0.0 <= heat.min() and heat.max() == pytest.approx(1.0)
    other = model.explain(path, target="no_tumor", method="gradcam++")
    assert other.shape == size and not np.allclose(other, heat), "another class and method give another map"
    with pytest.raises(MedzooError, match="no class 'tumour'"):
        model.explain(path, target="tumour")
    with pytest.raises(MedzooError, match="explain takes one input"):
        model.explain([path, path])


def test_an_array_that_fits_no_input_of_the_model_is_one_clear_error():
    model = medzoo.load(SHIPPED, device="cpu")
    with pytest.raises(MedzooError, match=r"array\[0\]: an array of shape \(5, 32, 32\) does not fit"):
        model.predict(np.zeros((5, 32, 32), np.uint8))


def test_train_returns_the_run_and_evaluate_reproduces_its_test_metrics(tmp_path):
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    run = medzoo.train("demo", "trainer.max_epochs=1", *FAST, f"hydra.run.dir={tmp_path / 'run'}")
    assert (list(root.handlers), root.level) == before  # the caller's logging is back after the job
    assert "done: best epoch" in (run.dir / "cli.log").read_text()  # and the run's log file was written, closed
    assert run.dir == tmp_path / "run" and run.checkpoint == run.dir / "checkpoints" / "best.safetensors"
    assert run.checkpoint.exists() and run.report.exists()
    assert run.metrics == json.loads((run.dir / "metrics.json").read_text())
    assert run.metrics["test"]["accuracy"] == json.loads((run.dir / "metrics.json").read_text())["test"]["accuracy"]

    metrics = medzoo.evaluate(run.checkpoint, "split=test", "trainer.precision=fp32",
                              f"hydra.run.dir={tmp_path / 'eval'}")
    assert metrics["run_dir"] == str(tmp_path / "eval")
    assert metrics["test"]["accuracy"] == pytest.approx(run.metrics["test"]["accuracy"])
    assert metrics["test"]["confusion_matrix"] == run.metrics["test"]["confusion_matrix"]


def test_errors_are_raised_as_medzoo_errors_not_printed_or_exited(tmp_path):
    with pytest.raises(UnknownNameError, match="Did you mean: demo"):
        medzoo.train("demoo")
    with pytest.raises(ConfigError, match="trainer.max_epochs=-1"):
        medzoo.train("demo", "trainer.max_epochs=-1", f"hydra.run.dir={tmp_path / 'bad'}")
    with pytest.raises(ConfigError, match="overrides are 'key=value' strings"):
        medzoo.train("demo", "-m")


def write_folder(root, seed=0):
    """Training/ and Testing/ with two classes and a planted cross-split copy."""
    rng = np.random.default_rng(seed)
    for split, count in (("Training", 6), ("Testing", 3)):
        for label in ("a", "b"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for index in range(count):
                Image.fromarray((rng.random((64, 64)) * 255).astype(np.uint8)).save(folder / f"{index}.png")
    (root / "Testing" / "a" / "copy.png").write_bytes((root / "Training" / "a" / "0.png").read_bytes())


def test_audit_returns_the_summary_pairs_and_report_it_wrote(tmp_path):
    write_folder(tmp_path / "data")
    found = medzoo.audit(tmp_path / "data", "data.class_map={}", f"hydra.run.dir={tmp_path / 'audit'}")
    assert found.dir == tmp_path / "audit" and found.report.exists()
    assert found.summary == json.loads((found.dir / "summary.json").read_text())
    assert found.summary["exact_pairs"] >= 1 and found.summary["test_leaked"] == 1
    with open(found.dir / "pairs.csv", newline="") as handle:
        assert found.pairs == list(csv.DictReader(handle))
    assert any("copy.png" in json.dumps(pair) for pair in found.pairs)
    assert any("copy.png" in name for name in found.clean_split["test_leaked"])


def test_prepare_and_bench_return_what_their_commands_write(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (tmp_path / "in" / label).mkdir(parents=True)
        for index in range(3):
            np.save(tmp_path / "in" / label / f"{index}.npy", rng.integers(0, 255, (5, 16, 16), dtype=np.uint8))
    summary = medzoo.prepare(tmp_path / "in", tmp_path / "cache", "progress=false",
                             f"hydra.run.dir={tmp_path / 'prep'}")
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert len(manifest["samples"]) == 6 and summary["classes"] == ["a", "b"]

    result = medzoo.bench("demo", "model=resnet10", "bench.steps=2", "bench.warmup_steps=1", "bench.eval_steps=1",
                          "trainer.progress=false", f"hydra.run.dir={tmp_path / 'bench'}")
    assert result == json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert result["train"]["images"] == 2 * result["batch_size"]

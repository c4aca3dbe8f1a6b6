"""Exact resume: a deterministic run killed with SIGKILL after epoch 1 and resumed with trainer.resume=auto
ends with the same weights and metrics as an uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from medzoo.engine.state import load_state
from tests.conftest import BRAIN_TUMOR
from tests.helpers import CLASSES, make_image_folder
from tests.test_cli import MEDZOO

SETTINGS = ["recipe=brain_tumor_resnet18", "transforms.image_size=64", "model=resnet10", "data.batch_size=8",
            "data.num_workers=0", "trainer.progress=false", "trainer.deterministic=true", "trainer.max_epochs=2",
            "logger.plots=false"]


def small_subset(dest: Path, per_class_train: int = 12, per_class_test: int = 3) -> Path:
    """A few real images per class when ../shared/data is there, else a synthetic folder of the same layout."""
    if not (BRAIN_TUMOR / "Training").is_dir():
        return make_image_folder(dest, per_class_train, per_class_test)
    for split, count in (("Training", per_class_train), ("Testing", per_class_test)):
        for name in CLASSES:
            (dest / split / name).mkdir(parents=True)
            for path in sorted((BRAIN_TUMOR / split / name).iterdir())[:count]:
                shutil.copy(path, dest / split / name / path.name)
    return dest


def state_epoch(path: Path) -> int:
    try:
        return load_state(path)["progress"]["epoch"]
    except Exception:  # not written yet, or being replaced
        return -1


def test_sigkill_after_epoch_one_then_resume_matches_uninterrupted_run(tmp_path):
    root = small_subset(tmp_path / "data")
    args = [*SETTINGS, f"data.root={root}"]
    env = {**os.environ, "MEDZOO_HOME": str(tmp_path / "home")}
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run([MEDZOO, "train", *args, f"hydra.run.dir={straight}"], check=True, env=env, capture_output=True)

    process = subprocess.Popen([MEDZOO, "train", *args, f"hydra.run.dir={killed}"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state, deadline = killed / "checkpoints" / "last.pt", time.monotonic() + 300
    while state_epoch(state) < 1 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if process.poll() is not None:
        pytest.fail("the run finished before it could be killed after epoch 1; make its epochs longer")
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert state_epoch(state) == 1 and not (killed / "metrics.json").exists()

    resumed = subprocess.run([MEDZOO, "train", *args, f"hydra.run.dir={killed}", "trainer.resume=auto"],
                             env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stderr + resumed.stdout
    expected = load_file(straight / "checkpoints" / "last.safetensors")
    actual = load_file(killed / "checkpoints" / "last.safetensors")
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (straight, killed))
    assert a["test"] == b["test"] and a["val"] == b["val"]

"""A class of 30 students must not drown in disk or waiting (issue 18, item 5): a finished run keeps no resume
state unless asked, a 1-epoch demo run stays under 30 MB, `medzoo --help` and `medzoo zoo list` start without
torch (and --help without Hydra), and a bare `medzoo data` lists the datasets instead of downloading one."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from medzoo import cli
from medzoo.datasets import fetch as fetch_module
from medzoo.datasets.fetch import SOURCES, read_fingerprint
from medzoo.engine.settings import TrainerSettings
from medzoo.errors import ConfigError
from medzoo.zoo import hub

# --------------------------------------------------------------------------- start-up: what a command imports

PROBE = ("import contextlib, io, sys\n"
         "from medzoo.cli import main\n"
         "out = io.StringIO()\n"
         "with contextlib.redirect_stdout(out):\n"
         "    main({argv!r})\n"
         "print(out.getvalue())\n"
         "print('torch' in sys.modules, 'hydra' in sys.modules)")


def imports_of(argv: list[str]) -> tuple[str, bool, bool]:
    """What `medzoo ARGV` printed, and whether torch and hydra were imported, from a fresh interpreter."""
    result = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    *printed, flags = result.stdout.rstrip("\n").split("\n")
    torch_imported, hydra_imported = (flag == "True" for flag in flags.split())
    return "\n".join(printed), torch_imported, hydra_imported


def test_help_imports_neither_torch_nor_hydra():
    printed, torch_imported, hydra_imported = imports_of(["--help"])
    assert "recipes (recipe=NAME):" in printed and "demo" in printed
    assert (torch_imported, hydra_imported) == (False, False)


def test_zoo_list_and_info_answer_without_torch():
    printed, torch_imported, _ = imports_of(["zoo", "list"])
    assert not torch_imported
    names = [line.split()[0] for line in printed.splitlines() if line.strip()]
    assert names == list(hub.manifest())
    printed, torch_imported, _ = imports_of(["zoo", "info", f"name={names[0]}"])
    assert not torch_imported
    assert json.loads(printed)["name"] == names[0]


# --------------------------------------------------------------------------- `medzoo data`: a list, no download

@pytest.fixture
def no_network(monkeypatch):
    """Network allowed by the environment, but any download fails the test."""
    monkeypatch.delenv("MEDZOO_OFFLINE", raising=False)

    def refuse(*args, **kwargs):
        raise AssertionError(f"medzoo data tried to download: {args[:1]}")

    monkeypatch.setattr(fetch_module, "download_file", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def run_data(capsys, monkeypatch, *argv: str) -> str:
    monkeypatch.setattr(sys, "argv", sys.argv[:1])
    cli.main(["data", *argv])
    return capsys.readouterr().out


def test_bare_data_lists_each_fetchable_set_where_it_goes_and_whether_it_is_there(tmp_path, capsys, monkeypatch,
                                                                                  no_network):
    monkeypatch.setenv("MEDZOO_DATA", str(tmp_path))
    out = run_data(capsys, monkeypatch)
    for source in SOURCES.values():
        assert source.name in out and f"medzoo data fetch name={source.name}" in out
        assert f"{tmp_path / source.folder}: not fetched" in out
    assert "breastmnist" in out and "data=breastmnist" in out  # shipped: nothing to fetch
    assert list(tmp_path.iterdir()) == []  # nothing written, nothing downloaded

    source = SOURCES["brain_tumor"]
    listed = sorted(read_fingerprint(source.fingerprint))
    for name in listed[:10]:
        (tmp_path / source.folder / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / source.folder / name).touch()
    assert f"incomplete (10 of {len(listed)} files)" in run_data(capsys, monkeypatch)
    for name in listed[10:]:
        (tmp_path / source.folder / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / source.folder / name).touch()
    assert f"{tmp_path / source.folder}: present" in run_data(capsys, monkeypatch, f"dest={tmp_path}")


def test_data_fetch_is_unchanged_and_a_wrong_action_names_the_actions(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", sys.argv[:1])
    with pytest.raises(SystemExit) as exit_info:  # MEDZOO_OFFLINE=1 (conftest): fetch says what to do instead
        cli.main(["data", "fetch", "name=brain_tumor", f"dest={tmp_path}"])
    assert exit_info.value.code == 2 and "offline" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["data", "lst"])
    assert "Did you mean: list?" in capsys.readouterr().err


# --------------------------------------------------------------------------- the run dir of a finished run

# A 1-epoch run of the full recipe (546 training images) takes 15-25 s on the 2-core CPU, and this test needs
# three runs; so it trains the recipe's model on a subset of the same file. The subset bounds the full run:
# the checkpoint holds the model's weights and card, whose size does not depend on the number of images; what does
# (predictions_*.csv, one row per image) is about 13 kB for the full run's 234 val and test images, and the
# report shows a fixed number of thumbnails. Measured full run, 2026-12-06: 23.1 MB.
RUN_DIR_LIMIT = 30 * 10**6
COUNTS = {"train": 24, "val": 8, "test": 8}


def demo_subset(path: Path) -> Path:
    """The first images of each class of each split of the shipped BreastMNIST, in the same file format."""
    from medzoo.datasets.medmnist import resolve_npz

    with np.load(resolve_npz("builtin:breastmnist")) as full:
        arrays = {}
        for split, count in COUNTS.items():
            labels = full[f"{split}_labels"].reshape(-1)
            keep = np.sort(np.concatenate([np.flatnonzero(labels == c)[:count // 2] for c in (0, 1)]))
            arrays[f"{split}_images"], arrays[f"{split}_labels"] = full[f"{split}_images"][keep], labels[keep]
    np.savez(path, **arrays)
    return path


def run_size(run_dir: Path) -> int:
    return sum(path.stat().st_size for path in run_dir.rglob("*") if path.is_file())


def train_demo(monkeypatch, run_dir: Path, npz: Path, *settings: str) -> None:
    monkeypatch.setattr(sys, "argv", sys.argv[:1])
    cli.main(["train", "recipe=demo", f"data.path={npz}", "trainer.max_epochs=1", "trainer.progress=false",
              *settings, f"hydra.run.dir={run_dir}"])


def dtypes(path: Path) -> set[str]:
    with safe_open(str(path), framework="pt") as handle:
        return {str(handle.get_slice(name).get_dtype()) for name in handle.keys()}


def test_a_finished_demo_run_is_small_and_keeps_its_resume_state_only_when_asked(tmp_path, capsys, monkeypatch):
    npz = demo_subset(tmp_path / "breastmnist_subset.npz")

    default = tmp_path / "default"
    train_demo(monkeypatch, default, npz)
    files = sorted(path.name for path in (default / "checkpoints").iterdir())
    assert files == ["best.safetensors"], files  # no last.pt, no last.safetensors
    assert run_size(default) < RUN_DIR_LIMIT, sorted((p.stat().st_size, str(p)) for p in default.rglob("*"))[-5:]
    # float16 by default; tensors float16 would change by more than 0.1 % (here: biases near 1e-5) stay float32
    assert "F16" in dtypes(default / "checkpoints" / "best.safetensors") <= {"F16", "F32", "I64"}
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:  # going on from a finished run needs its state: said before work
        train_demo(monkeypatch, default, npz, "trainer.resume=auto")
    assert exit_info.value.code == 2 and "trainer.keep_resume_state=true" in capsys.readouterr().err

    kept = tmp_path / "kept"
    train_demo(monkeypatch, kept, npz, "trainer.keep_resume_state=true", "trainer.save_last=true",
               "trainer.weights_dtype=float32")
    files = sorted(path.name for path in (kept / "checkpoints").iterdir())
    assert files == ["best.safetensors", "last.pt", "last.safetensors"], files
    assert dtypes(kept / "checkpoints" / "best.safetensors") <= {"F32", "I64"}
    before = json.loads((kept / "metrics.json").read_text())
    capsys.readouterr()
    train_demo(monkeypatch, kept, npz, "trainer.keep_resume_state=true", "trainer.save_last=true",
               "trainer.weights_dtype=float32", "trainer.resume=auto")
    log = "".join(path.read_text() for path in kept.glob("*.log"))  # Hydra's log file of the run dir
    assert "resumed from" in log and "after epoch 1" in log
    after = json.loads((kept / "metrics.json").read_text())
    assert after["test"]["confusion_matrix"] == before["test"]["confusion_matrix"]
    assert after["best_epoch"] == before["best_epoch"] == 1 and (kept / "checkpoints" / "last.pt").exists()


@pytest.mark.parametrize(("setting", "value"), [("weights_dtype", "float8"), ("keep_resume_state", "yes"),
                                                ("save_last", 1)])
def test_the_new_trainer_settings_are_checked(setting, value):
    with pytest.raises(ConfigError, match=f"trainer.{setting}="):
        TrainerSettings.from_config({setting: value})


def test_weights_narrow_to_float16_only_where_every_value_survives(tmp_path):
    import torch

    from medzoo.zoo import create_model
    from medzoo.zoo.card import ModelCard
    from medzoo.zoo.checkpoint import load_checkpoint, save_checkpoint

    model = create_model("resnet10", in_chans=1, num_classes=2, stem="small", width=0.25)
    with torch.no_grad():
        model.bn1.running_var.fill_(1e6)    # beyond float16's 65504: must stay float32
        model.bn1.running_mean.fill_(1e-9)  # float16 rounds it to zero: must stay float32
    card = ModelCard(arch="resnet10", in_chans=1, num_classes=2, classes=("a", "b"),
                     model_kwargs={"stem": "small", "width": 0.25})
    state, _ = load_checkpoint(save_checkpoint(tmp_path / "m.safetensors", model, card, dtype=torch.float16))
    assert state["bn1.running_var"].dtype == state["bn1.running_mean"].dtype == torch.float32
    assert state["bn1.running_var"][0].item() == 1e6 and state["bn1.running_mean"][0].item() == pytest.approx(1e-9)
    assert state["conv1.weight"].dtype == torch.float16 and state["fc.weight"].dtype == torch.float16

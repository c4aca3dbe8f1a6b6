"""Resume states and prepared caches are untrusted input: each bad one ends in one DataError line that names the
file, what is wrong and the fix; nothing in them is executed, and valid ones (and pre-record states) still load."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from medzoo import cli
from medzoo.datasets.prepared_store import manifest as prepared_manifest
from medzoo.datasets.prepared_store import prepare
from medzoo.engine.optim import build_scheduler
from medzoo.engine.precision import Precision
from medzoo.engine.state import load_state, save_state
from medzoo.engine.trainer import Trainer
from medzoo.errors import DataError
from medzoo.zoo import create_model
from tests.helpers import CLASSES, make_image_folder, prepared_dataset
from tests.test_cli import TINY

SETTINGS = {"max_epochs": 2, "accumulate_grad_batches": 1, "grad_clip_norm": None, "compile": False,
            "compile_mode": "default", "log_every_n_steps": 1, "progress": False, "monitor": "accuracy",
            "early_stopping_patience": None, "on_nonfinite": "stop"}


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message, message
    return message


# ----------------------------------------------------------------------------- resume states

def zoo_trainer(run_dir: Path, arch: str = "resnet10", classes=CLASSES, recipe: str | None = "demo",
                width: float = 0.25) -> Trainer:
    torch.manual_seed(0)
    model = create_model(arch, in_chans=1, num_classes=len(classes), spatial_dims=2, input_size=32, width=width)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scheduler = build_scheduler(OmegaConf.create({"name": "constant"}), optimizer, 4, 2)
    return Trainer(model, optimizer, scheduler, torch.nn.CrossEntropyLoss(), device=torch.device("cpu"),
                   precision=Precision.resolve("fp32", torch.device("cpu")), settings=OmegaConf.create(SETTINGS),
                   channels_last=False, classes=list(classes), run_dir=run_dir, on_best=lambda *_: None,
                   recipe=recipe)


@pytest.fixture
def saved(tmp_path) -> Path:
    """The last.pt of a tiny resnet10 run on the four brain-tumour classes (recipe `demo`)."""
    trainer = zoo_trainer(tmp_path / "first")
    trainer.progress.epoch = 1
    trainer.save_resume_state()
    return trainer.state_path


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize(("changes", "field"), [
    ({"arch": "resnet18"}, "arch: this run has 'resnet18', the state 'resnet10'"),
    ({"classes": CLASSES[:3]}, "num_classes: this run has 3, the state 4"),
    ({"classes": ("a", "b", "c", "d")}, "classes: this run has ['a', 'b', 'c', 'd']"),
    ({"width": 0.5}, "model_kwargs.width: this run has 0.5, the state 0.25"),
    ({"recipe": "other"}, "recipe: this run has 'other', the state 'demo'"),
])
def test_a_state_of_another_model_or_run_names_the_field_before_loading_anything(saved, tmp_path, changes, field):
    trainer = zoo_trainer(tmp_path / "second", **changes)
    before = weights(trainer)
    with pytest.raises(DataError) as exc:
        trainer.resume(saved)
    message = one_line(exc)
    assert str(saved) in message and field in message and "trainer.resume" in message and "Delete it" in message
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())  # nothing was loaded
    assert trainer.progress.epoch == 0


def test_the_same_run_resumes_from_its_own_state(saved, tmp_path):
    trainer = zoo_trainer(tmp_path / "again")
    trainer.resume(saved)
    assert trainer.progress.epoch == 1
    assert load_state(saved)["record"]["arch"] == "resnet10"


def test_a_legacy_state_without_its_record_resumes_with_a_warning_when_it_fits(saved, tmp_path, caplog):
    state = load_state(saved)
    legacy = {k: v for k, v in state.items() if k not in ("format", "format_version", "record")}
    save_state(saved, legacy)
    trainer = zoo_trainer(tmp_path / "again", recipe="anything")  # no record: nothing to compare with
    with caplog.at_level(logging.WARNING, logger="medzoo.engine.state"):
        trainer.resume(saved)
    assert trainer.progress.epoch == 1 and "before medzoo recorded" in caplog.text
    assert all(torch.equal(state["model"][k], v) for k, v in trainer.model.state_dict().items())
    # a legacy state that does not fit is still one line: load_state_dict's shape error, wrapped
    other = zoo_trainer(tmp_path / "other", classes=CLASSES[:3])
    with pytest.raises(DataError) as exc:
        other.resume(saved)
    message = one_line(exc)
    assert "resume state's model does not fit this run" in message and "size mismatch" in message


class _RunsCode:
    def __reduce__(self):
        return (os.mkdir, (str(Path.cwd() / "PWNED-BY-RESUME-STATE"),))


@pytest.mark.parametrize("kind", ["list", "truncated", "foreign pickle", "plain pickle", "missing part",
                                  "not a dict part", "bad progress", "newer version", "bad rng"])
def test_a_damaged_or_foreign_state_is_one_line_naming_the_file_and_the_fix(saved, tmp_path, kind, monkeypatch):
    monkeypatch.chdir(tmp_path)
    state = load_state(saved)
    if kind == "list":
        torch.save([1, 2, 3], saved)
    elif kind == "truncated":
        saved.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    elif kind == "foreign pickle":
        torch.save({"model": _RunsCode()}, saved)
    elif kind == "plain pickle":
        saved.write_bytes(__import__("pickle").dumps({"model": {}}))
    elif kind == "missing part":
        save_state(saved, {k: v for k, v in state.items() if k != "optimizer"})
    elif kind == "not a dict part":
        save_state(saved, {**state, "scaler": [1]})
    elif kind == "bad progress":
        save_state(saved, {**state, "progress": {**state["progress"], "epoch": "1"}})
    elif kind == "newer version":
        save_state(saved, {**state, "format_version": 99})
    else:
        save_state(saved, {**state, "rng": {"python": (3,), "torch": torch.zeros(2), "numpy": {}}})
    trainer = zoo_trainer(tmp_path / "second")
    with pytest.raises(DataError) as exc:
        trainer.resume(saved)
    message = one_line(exc)
    assert str(saved) in message and "Delete it" in message
    expected = {"list": "holds a list, not a dict", "truncated": "not a complete PyTorch zip archive",
                "foreign pickle": "never loaded", "plain pickle": "not a complete PyTorch zip archive",
                "missing part": "without optimizer", "not a dict part": "part 'scaler' is a list",
                "bad progress": "progress 'epoch' is '1'", "newer version": "format version 99",
                "bad rng": "resume state's rng does not fit"}[kind]
    assert expected in message
    assert not (tmp_path / "PWNED-BY-RESUME-STATE").exists()


def test_a_scheduler_state_of_another_schedule_is_refused(saved, tmp_path):
    state = load_state(saved)
    save_state(saved, {**state, "scheduler": {**state["scheduler"], "optimizer": 3, "step": 1}})
    with pytest.raises(DataError) as exc:
        zoo_trainer(tmp_path / "second").resume(saved)
    assert "scheduler has other settings" in one_line(exc) and "'optimizer'" in str(exc.value)



@pytest.mark.parametrize(("kind", "problem"), [
    ("buffer shape", "holds 'momentum_buffer' of shape (3,) for a parameter of shape (16, 1, 3, 3)"),
    ("lr type", "sets lr='abc' in parameter group 0"),
    ("momentum list", "sets momentum=[0.9] in parameter group 0"),
])
def test_an_optimizer_state_that_would_fail_at_the_first_step_is_refused_on_resume(saved, tmp_path, kind, problem):
    state = load_state(saved)
    optimizer = state["optimizer"]
    first = optimizer["param_groups"][0]["params"][0]
    if kind == "buffer shape":  # load_state_dict takes it; SGD's first step would fail on the shape
        optimizer["state"] = {first: {"momentum_buffer": torch.zeros(3)}}
    else:
        key, value = ("lr", "abc") if kind == "lr type" else ("momentum", [0.9])
        optimizer["param_groups"][0][key] = value
    save_state(saved, state)
    trainer = zoo_trainer(tmp_path / "second")
    with pytest.raises(DataError) as exc:
        trainer.resume(saved)
    message = one_line(exc)
    assert str(saved) in message and "resume state's optimizer" in message and problem in message
    assert "Delete it" in message


def test_an_optimizer_state_with_buffers_of_the_parameters_shapes_resumes(saved, tmp_path):
    state = load_state(saved)
    trainer = zoo_trainer(tmp_path / "second")
    params = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    state["optimizer"]["state"] = {index: {"momentum_buffer": torch.ones_like(p)} for index, p in enumerate(params)}
    save_state(saved, state)
    trainer.resume(saved)
    assert torch.equal(trainer.optimizer.state[params[0]]["momentum_buffer"], torch.ones_like(params[0]))


# ----------------------------------------------------------------------------- prepared caches

@pytest.fixture
def cache(tmp_path) -> Path:
    """A valid two-class cache of three (4, 8, 8) int16 stacks, and a copy of its first sample outside it."""
    source = tmp_path / "src"
    rng = np.random.default_rng(0)
    for index, name in enumerate(("calm", "calm", "bright")):
        (source / name).mkdir(parents=True, exist_ok=True)
        np.save(source / name / f"{index}.npy", rng.integers(0, 100, (4, 8, 8)).astype(np.int16))
    sources = [(path, path.parent.name) for path in sorted(source.glob("*/*.npy"))]
    out = tmp_path / "cache"
    prepare(sources, out, classes=["calm", "bright"], progress=False)
    first = json.loads((out / "manifest.json").read_text())["samples"][0]
    shutil.copy(out / first["file"], tmp_path / "outside.npy")  # an intact file: only the path check stops it
    return out


def edit_entry(cache: Path, **changes) -> None:
    path = cache / "manifest.json"
    manifest = json.loads(path.read_text())
    entry = manifest["samples"][0]
    for key, value in changes.items():
        if value is KeyError:
            del entry[key]
        else:
            entry[key] = value
    path.write_text(json.dumps(manifest))


def absolute(cache: Path) -> str:
    return str(cache.parent / "outside.npy")


def symlink(cache: Path) -> str:
    (cache / "samples" / "link.npy").symlink_to(cache.parent / "outside.npy")
    return "samples/link.npy"


@pytest.mark.parametrize(("key", "value", "problem"), [
    ("file", "../outside.npy", "climbs out with '..'"),
    ("file", "samples/../../outside.npy", "climbs out with '..'"),
    ("file", absolute, "an absolute path"),
    ("file", symlink, "outside the cache's samples/ folder"),
    ("label", 2, "is 2, out of range for the 2 classes"),
    ("label", -1, "out of range"),
    ("label", "1", "is '1', expected an integer"),
    ("shape", KeyError, "'shape' is missing"),
    ("shape", "4x8x8", "expected an array"),
    ("shape", [1024, 1024, 2**20], "GiB of data, more than the"),
    ("shape", [4, 0, 8], "positive integers"),
    ("dtype", "object", "'dtype' is 'object', not one of"),
    ("dtype", "O", "'dtype' is 'O', not one of"),
    ("bytes", 10, "'bytes' is 10"),
])
def test_a_bad_manifest_entry_is_named_with_its_index_key_and_the_fix(cache, key, value, problem):
    edit_entry(cache, **{key: value(cache) if callable(value) and value is not KeyError else value})
    with pytest.raises(DataError) as exc:
        prepared_dataset(cache)
    message = one_line(exc)
    assert str(cache / "manifest.json") in message and "samples[0] (key 'bright/2.npy')" in message
    assert problem in message and "medzoo prepare" in message


@pytest.mark.parametrize(("text", "problem"), [
    ("[1, 2]", "a JSON list, not an object"),
    ('{"format": ', "unreadable manifest (JSONDecodeError"),
    ("[" * 100_000 + "]" * 100_000, "unreadable manifest (RecursionError"),
])
def test_a_manifest_that_is_not_the_expected_json_is_one_line(cache, text, problem):
    (cache / "manifest.json").write_text(text)
    with pytest.raises(DataError) as exc:
        prepared_dataset(cache)
    assert problem in one_line(exc) and "medzoo prepare" in str(exc.value)


def test_a_manifest_larger_than_the_limit_is_refused_before_it_is_parsed(cache, monkeypatch):
    monkeypatch.setattr(prepared_manifest, "MAX_MANIFEST_BYTES", 1000)
    monkeypatch.setattr(prepared_manifest.json, "loads", lambda *_: pytest.fail("parsed an oversized manifest"))
    with pytest.raises(DataError) as exc:
        prepared_dataset(cache)
    assert "refusing to parse it" in one_line(exc)


def test_top_level_fields_of_the_wrong_type_are_named(cache):
    path = cache / "manifest.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, "classes": "calm,bright"}))
    with pytest.raises(DataError) as exc:
        prepared_dataset(cache)
    assert "'classes' is 'calm,bright', expected an array" in one_line(exc)


def test_a_valid_cache_still_opens_and_a_rerun_over_a_tampered_manifest_starts_over(cache, caplog):
    data = prepared_dataset(cache, verify="full")
    assert len(data) == 3 and data.store.classes == ["calm", "bright"] and data[0][0].shape == (4, 8, 8)
    edit_entry(cache, bytes=KeyError)  # the rerun's reuse of finished samples would read entry["bytes"]
    sources = [(path, path.parent.name) for path in sorted((cache.parent / "src").glob("*/*.npy"))]
    with caplog.at_level(logging.WARNING, logger="medzoo.datasets.prepared_store"):
        manifest = prepare(sources, cache, classes=["calm", "bright"], progress=False)
    assert "starting the cache over" in caplog.text and "'bytes' is missing" in caplog.text
    assert manifest["last_run"]["read"] == 3 and len(prepared_dataset(cache, verify="full")) == 3


def test_the_cli_prints_one_line_and_exits_2_for_a_bad_cache(cache, tmp_path, capsys, monkeypatch):
    edit_entry(cache, file="../outside.npy")
    monkeypatch.setattr(sys, "argv", sys.argv[:1])
    monkeypatch.setenv("MEDZOO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MEDZOO_OFFLINE", "1")
    settings = [item for item in TINY if not item.startswith("transforms.")]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "data=prepared", f"data.path={cache}", "transforms=stack_2d5_aug", *settings,
                  "trainer.max_epochs=1", "logger.plots=false", f"hydra.run.dir={tmp_path / 'run'}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith("medzoo train: error: ") and "samples[0]" in err and "../outside.npy" in err


def test_the_cli_refuses_to_resume_another_models_state(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", sys.argv[:1])
    monkeypatch.setenv("MEDZOO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MEDZOO_OFFLINE", "1")
    root = make_image_folder(tmp_path / "data", per_class_train=10, per_class_test=2)
    common = ["recipe=brain_tumor_resnet18", f"data.root={root}", *TINY, "model.width=0.25", "logger.plots=false",
              "evaluate_test=false", "trainer.max_epochs=1", "logger.loggers=[]", "trainer.keep_resume_state=true"]
    cli.main(["train", *common, f"hydra.run.dir={tmp_path / 'first'}"])
    assert load_state(tmp_path / "first" / "checkpoints" / "last.pt")["record"]["recipe"] == "brain_tumor_resnet18"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", *common, "model=resnet18", f"trainer.resume={tmp_path / 'first'}",
                  f"hydra.run.dir={tmp_path / 'second'}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert "arch: this run has 'resnet18', the state 'resnet10'" in err and "trainer.resume" in err

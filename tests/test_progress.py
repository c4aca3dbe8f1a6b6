"""Progress on every long job (issue 16): a bar on a terminal, otherwise a log line every LOG_INTERVAL_S seconds and
one at the end; nothing at all when turned off. The helper with a fake clock, the passes that use it in process, and
`medzoo predict` / `medzoo eval` with their output captured (tests/cli_runner.py: no terminal)."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medzoo.progress import BYTES, LOG_INTERVAL_S, Meter, progress
from tests.cli_runner import run_medzoo


class FakeClock:
    """Seconds that move only when a test says so."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


class BrokenTerminal(Terminal):
    """A terminal whose every write fails, as a vanished pipe does."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


@pytest.fixture
def lines(caplog):
    """The progress lines logged; stderr is a plain stream (no terminal) unless a test replaces it."""
    caplog.set_level(logging.INFO, logger="medzoo.progress")
    return lambda: [r.getMessage() for r in caplog.records if r.name == "medzoo.progress"]


def stderr_is(monkeypatch, stream: io.StringIO) -> io.StringIO:
    """Replace stderr inside the test itself (pytest puts its own back between a fixture and the test)."""
    monkeypatch.setattr(sys, "stderr", stream)
    return stream


def test_off_a_terminal_a_line_every_interval_and_one_at_the_end(lines, monkeypatch):
    stream = stderr_is(monkeypatch, io.StringIO())
    clock, seen = FakeClock(), []
    for item in progress([f"image{i}" for i in range(40)], desc="eval test", unit="images", clock=clock):
        seen.append(item)
        clock.now += 1.0  # 40 images at one second each: lines at 10, 20 and 30 s, then the last one
    assert seen == [f"image{i}" for i in range(40)]
    logged = lines()
    assert logged[:3] == ["eval test: 10/40 images (25 %), 10 s, ~30 s left",
                          "eval test: 20/40 images (50 %), 20 s, ~20 s left",
                          "eval test: 30/40 images (75 %), 30 s, ~10 s left"]
    assert logged[3:] == ["eval test: 40 images in 40 s"]
    # no bar off a terminal (a stale log handler of an earlier in-process Hydra run may still report its own
    # closed stream here: not the bar's output)
    shown = stream.getvalue()
    assert LOG_INTERVAL_S == 10.0 and "\r" not in shown and "images/s" not in shown and "it/s" not in shown


def test_sizes_count_what_each_batch_holds_and_a_generator_has_no_percentage(lines, monkeypatch):
    stderr_is(monkeypatch, io.StringIO())
    clock = FakeClock()
    batches = [np.zeros((8, 2)), np.zeros((8, 2)), np.zeros((3, 2))]

    def moving(items):
        for item in items:
            clock.now += 6.0
            yield item

    shown = list(progress(moving(batches), desc="decode train", unit="images", size=len, clock=clock))
    assert [len(b) for b in shown] == [8, 8, 3]
    assert lines() == ["decode train: 16 images, 12 s", "decode train: 19 images in 18 s"]


def test_bytes_resume_and_an_early_stop_gives_no_final_line(lines, monkeypatch):
    stderr_is(monkeypatch, io.StringIO())
    clock = FakeClock()
    with Meter(4_000_000, "download set.zip", BYTES, initial=1_000_000, clock=clock) as meter:
        for _ in range(3):
            clock.now += 5.0
            meter.update(1_000_000)
    assert lines() == ["download set.zip: 3.0 MB/4.0 MB (75 %), 10 s, ~5.0 s left",
                       "download set.zip: 4.0 MB in 15 s"]
    with pytest.raises(RuntimeError), Meter(10, "audit hashing", "files", clock=clock) as meter:
        meter.update(3)
        raise RuntimeError("the job failed")
    for _ in zip(range(2), progress(range(10), desc="predict", clock=clock)):  # the caller stops after two
        pass
    assert len(lines()) == 2


def test_disabled_gives_the_items_untouched_and_shows_nothing(lines, capsys, monkeypatch):
    stream = stderr_is(monkeypatch, Terminal())  # not even a bar on a terminal
    items = [object() for _ in range(5)]
    assert progress(items, desc="prepare", enabled=False) is items
    with Meter(5, "download x", BYTES, enabled=False) as meter:
        meter.update(5)
    assert lines() == [] and capsys.readouterr() == ("", "") and stream.getvalue() == ""


def test_on_a_terminal_a_bar_and_only_the_closing_line(lines, monkeypatch):
    stream = stderr_is(monkeypatch, Terminal())
    clock = FakeClock()
    for _ in progress(range(30), desc="audit hashing", unit="files", clock=clock):
        clock.now += 1.0
    assert "audit hashing" in stream.getvalue() and "files" in stream.getvalue()
    assert lines() == ["audit hashing: 30 files in 30 s"]


def test_a_broken_terminal_never_fails_the_job(lines, monkeypatch):
    stderr_is(monkeypatch, BrokenTerminal())
    clock = FakeClock()
    seen = []
    for item in progress(range(25), desc="predict", unit="images", clock=clock):
        seen.append(item)
        clock.now += 1.0
    assert seen == list(range(25))
    assert lines() == ["predict: 10/25 images (40 %), 10 s, ~15 s left", "predict: 20/25 images (80 %), 20 s, ~5.0 s left",
                       "predict: 25 images in 25 s"]  # the bar could not be drawn: log lines instead


def test_predict_probs_shows_progress_on_the_main_process_only_and_returns_the_same(lines, monkeypatch):
    from medzoo.datasets.arrays import SplitArrays
    from medzoo.datasets.dataset import ArrayDataset
    from medzoo.engine import trainer
    from medzoo.engine.distributed import DistInfo
    from medzoo.engine.precision import Precision
    from medzoo.loading.loader import make_loader

    stderr_is(monkeypatch, io.StringIO())
    rng = np.random.default_rng(0)
    split = SplitArrays(rng.integers(0, 255, (20, 1, 4, 4)).astype(np.uint8), rng.integers(0, 2, 20),
                        [str(i) for i in range(20)])
    loader = make_loader(ArrayDataset(split, None), 8, shuffle=False, seed=0, num_workers=0)
    torch.manual_seed(0)
    model, cpu = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2)), torch.device("cpu")
    precision = Precision.resolve("fp32", cpu)
    quiet = trainer.predict_probs(model, loader, cpu, precision)  # per-epoch validation: no progress
    assert lines() == []
    shown = trainer.predict_probs(model, loader, cpu, precision, progress=True, desc="eval test")
    assert len(lines()) == 1 and lines()[0].startswith("eval test: 20 images in "), lines()
    assert all(np.array_equal(a, b) for a, b in zip(quiet, shown))
    monkeypatch.setattr(trainer, "gather_predictions", lambda indices, probs, labels, dist: (probs, labels))
    trainer.predict_probs(model, loader, cpu, precision, dist=DistInfo(rank=1, world_size=2), progress=True)
    assert len(lines()) == 1, "a process other than the main one showed progress"


def test_each_pass_over_the_images_shows_progress(lines, tmp_path, monkeypatch):
    """The audit's hashing, features and label-issue folds, the decode-once cache, prepare and a download, each
    with its own line."""
    stderr_is(monkeypatch, io.StringIO())
    from medzoo.audit.features import checkpoint_features
    from medzoo.audit.hashing import fingerprint_records
    from medzoo.audit.label_issues import out_of_sample_probabilities
    from medzoo.audit.settings import AuditSettings
    from medzoo.datasets.cache import decode_split
    from medzoo.datasets.folder_scan import FileRecord
    from medzoo.datasets.prepared_store import prepare
    from medzoo.download import download_file

    files = []
    for i in range(4):
        files.append(tmp_path / f"img{i}.png")
        Image.fromarray(np.full((16, 16), 40 * i, np.uint8)).save(files[-1])
    records = [FileRecord(p, 0, f"Training/a/{p.name}") for p in files]
    fingerprint_records(records, AuditSettings())
    fingerprint_records(records, AuditSettings(progress=False))
    checkpoint_features(records, AuditSettings(label_checkpoints=("breastmnist_resnet18",), label_layers=("layer4",)))
    labels = np.arange(20) % 2
    out_of_sample_probabilities(np.random.default_rng(0).normal(size=(20, 3)), labels, np.arange(20), 2, 0, 1.0,
                                shown=True)
    out_of_sample_probabilities(np.random.default_rng(0).normal(size=(20, 3)), labels, np.arange(20), 2, 0, 1.0)
    decode_split(records, 1, lambda pixels: pixels, desc="train")
    prepare([(p, "a") for p in files], tmp_path / "prepared", progress=True)
    prepare([(p, "a") for p in files], tmp_path / "again", progress=False)
    download_file(files[0].as_uri(), tmp_path / "copy.png")
    download_file(files[0].as_uri(), tmp_path / "quiet.png", progress=False)
    names = [line.split(":")[0] for line in lines()]
    assert names == ["audit hashing", "audit features breastmnist_resnet18", "audit label issues", "decode train",
                     "prepare", "download copy.png"], lines()


def medzoo(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    result = run_medzoo(*args, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_predict_logs_progress_to_its_output_and_its_log_file(tmp_path):
    inputs = tmp_path / "scans"
    inputs.mkdir()
    for i in range(3):
        Image.fromarray(np.full((28, 28), 60 * i, np.uint8)).save(inputs / f"scan{i}.png")
    run = tmp_path / "run"
    result = medzoo("predict", "ckpt=breastmnist_resnet18", f"inputs={inputs}", f"hydra.run.dir={run}", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert "predict read: 3 files in " in output and "predict: 3 images in " in output, output[-2000:]
    assert "predict: 3 images in " in (run / "cli.log").read_text()  # a log file sees it too
    quiet = medzoo("predict", "ckpt=breastmnist_resnet18", f"inputs={inputs}", "trainer.progress=false",
                   f"hydra.run.dir={tmp_path / 'quiet'}", cwd=tmp_path)
    assert "predict: " not in quiet.stdout + quiet.stderr and (tmp_path / "quiet" / "predictions.csv").is_file()


def test_eval_logs_progress(tmp_path):
    run = tmp_path / "run"
    result = medzoo("eval", "ckpt=breastmnist_resnet18", "data=breastmnist", "loader.num_workers=0",
                    f"hydra.run.dir={run}", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert "eval test: " in output and " images in " in output, output[-2000:]

"""Exact resume: a deterministic run killed with SIGKILL (after epoch 1, or at seeded random moments, at least one
of them during a checkpoint write, which the random-kill test asserts) and resumed with trainer.resume=auto
ends with the same weights and metrics as an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from medzoo.engine.state import load_state
from tests.conftest import BRAIN_TUMOR
from tests.helpers import CLASSES, make_image_folder
from tests.test_cli import MEDZOO

EPOCHS = 3
SETTINGS = ["recipe=brain_tumor_resnet18", "transforms.image_size=64", "model=resnet10", "loader.batch_size=8",
            "loader.num_workers=0", "trainer.progress=false", "trainer.deterministic=true",
            f"trainer.max_epochs={EPOCHS}", "logger.plots=false",
            "trainer.mix.name=cutmix",  # its draws come from the saved global RNG: resumed runs must mix alike
            # last.safetensors is compared too, both at full precision; the finished runs keep their last.pt
            "trainer.save_last=true", "trainer.weights_dtype=float32", "trainer.keep_resume_state=true"]
# Seeds the kill moments of the random-kill test; each seed gives another, reproducible schedule.
KILL_SEED = 2
KILLS = 3
# No test waits longer than this for a run to reach a point (a hung run fails instead of blocking CI).
PATIENCE_SECONDS = 900
POLL_SECONDS = 0.02
# Polling interval while waiting to catch a checkpoint write (writing ~60 MB takes tens of milliseconds).
FAST_POLL_SECONDS = 0.002


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


def file_stamp(path: Path) -> tuple[int, int, int] | None:
    """(inode, mtime in ns, size) of `path`, None when it does not exist: changes with every write or replace."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


class StateWatcher:
    """The epoch of a run's resume state, loaded again only when the file changes (it holds ~60 MB)."""

    def __init__(self, path: Path):
        self.path, self._stamp, self._epoch = path, None, -1

    def epoch(self) -> int:
        stamp = file_stamp(self.path)
        if stamp is None:
            return -1
        if stamp != self._stamp:
            self._epoch = state_epoch(self.path)
            self._stamp = stamp if self._epoch >= 0 else None
        return self._epoch


@dataclass
class Reference:
    """The uninterrupted run: its settings, environment, folder, and how long it took to reach each state."""

    args: list[str]
    env: dict[str, str]
    directory: Path
    state_seconds: dict[int, float] = field(default_factory=dict)

    @property
    def epoch_seconds(self) -> float:
        first, last = self.state_seconds[1], self.state_seconds[EPOCHS]
        return (last - first) / (EPOCHS - 1)


def launch(args: list[str], directory: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start `medzoo train` in `directory`; stdout and stderr go to `log` (a file: a pipe could fill and block)."""
    with open(log, "wb") as handle:
        return subprocess.Popen([MEDZOO, "train", *args, f"hydra.run.dir={directory}"], env=env,
                                stdout=handle, stderr=subprocess.STDOUT)


def wait_for(process: subprocess.Popen, ready: Callable[[], bool], poll: float = POLL_SECONDS) -> bool:
    """Poll until `ready()` (True) or the process ends (False); fails the test after PATIENCE_SECONDS."""
    deadline = time.monotonic() + PATIENCE_SECONDS
    while not ready():
        if process.poll() is not None:
            return False
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the run made no progress in {PATIENCE_SECONDS} s")
        time.sleep(poll)
    return True


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Reference:
    """One uninterrupted run, shared by the tests of this module, timed at each resume state it writes."""
    base = tmp_path_factory.mktemp("resume")
    root = small_subset(base / "data")
    env = {key: value for key, value in os.environ.items() if key != "MEDZOO_DATA"}
    env.update(MEDZOO_HOME=str(base / "home"), MEDZOO_OFFLINE="1")
    run = Reference([*SETTINGS, f"data.root={root}"], env, base / "straight")
    run.directory.mkdir()
    started = time.monotonic()
    process = launch(run.args, run.directory, env, base / "straight.log")
    watcher = StateWatcher(run.directory / "checkpoints" / "last.pt")

    def record() -> bool:
        epoch = watcher.epoch()
        if epoch > 0:
            run.state_seconds.setdefault(epoch, time.monotonic() - started)
        return False

    wait_for(process, record)
    assert process.wait() == 0, (base / "straight.log").read_text()[-3000:]
    assert sorted(run.state_seconds) == list(range(1, EPOCHS + 1)), run.state_seconds
    return run


def assert_same_result(expected: Path, actual: Path) -> None:
    """Both runs ended with bit-identical weights (last and best) and identical metrics."""
    for name in ("last.safetensors", "best.safetensors"):
        want, got = (load_file(d / "checkpoints" / name) for d in (expected, actual))
        assert want.keys() == got.keys(), name
        for key in want:
            assert torch.equal(want[key], got[key]), f"{name}: {key}"
    want, got = (json.loads((d / "metrics.json").read_text()) for d in (expected, actual))
    assert want == got


def test_sigkill_after_epoch_one_then_resume_matches_uninterrupted_run(reference, tmp_path):
    killed = tmp_path / "killed"
    process = launch(reference.args, killed, reference.env, tmp_path / "first.log")
    watcher = StateWatcher(killed / "checkpoints" / "last.pt")
    if not wait_for(process, lambda: watcher.epoch() >= 1):
        pytest.fail("the run finished before it could be killed after epoch 1; make its epochs longer")
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert watcher.epoch() == 1 and not (killed / "metrics.json").exists()

    resumed = subprocess.run([MEDZOO, "train", *reference.args, f"hydra.run.dir={killed}", "trainer.resume=auto"],
                             env=reference.env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stderr + resumed.stdout
    assert_same_result(reference.directory, killed)


@dataclass
class Attempt:
    """One launch of the run: the state it resumed from, and where the kill (if any) landed."""

    index: int
    log: Path
    resumed_from: int
    killed_after_s: float | None = None
    state_at_kill: int | None = None
    write_interrupted: bool = False

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def kill_moment(index: int, reference: Reference, rng: random.Random, write_interrupted: bool
                ) -> tuple[int, float, bool]:
    """Kill `index`: the state epoch to wait for, then a seeded random delay, or (kill 1, and later kills until
    one has interrupted a write) the next resume-state write: it lands mid-write when the polling catches the
    write, else just after it."""
    if index == 0:  # anywhere from start-up to the first resume state: possibly before any checkpoint
        return -1, rng.uniform(0.0, reference.state_seconds[1]), False
    if index == 1 or not write_interrupted:
        return min(index, EPOCHS - 1), float("inf"), True
    return min(index, EPOCHS - 1), rng.uniform(0.0, reference.epoch_seconds), False  # in a later epoch


def run_until_killed(attempt: Attempt, process: subprocess.Popen, directory: Path, moment: tuple[int, float, bool],
                     launched_ns: int) -> None:
    """Wait for the attempt's state epoch, then kill at its random delay, mid-write, or just after the next state
    is written, whichever comes first; a run that ends first is left alone."""
    epoch, delay, at_write = moment
    state = directory / "checkpoints" / "last.pt"
    watcher, partial = StateWatcher(state), state.with_name(state.name + ".tmp")
    started = time.monotonic()
    if not wait_for(process, lambda: watcher.epoch() >= epoch):
        return
    deadline, reached, before = time.monotonic() + delay, watcher.epoch(), file_stamp(state)

    def writing() -> bool:
        """A resume state is being written: into a fresh .tmp file (a stale one from an earlier kill does not
        count), or, were the write not atomic, into last.pt itself."""
        stamp = file_stamp(partial)
        return (stamp is not None and stamp[1] >= launched_ns) or file_stamp(state) != before

    def moment() -> bool:
        # At the latest once the next state is written, so that every attempt ends in a kill (timings vary a
        # lot on a shared machine); kill 1 also at the write itself, when the polling catches it.
        return time.monotonic() >= deadline or watcher.epoch() > reached or (at_write and writing())

    if not wait_for(process, moment, FAST_POLL_SECONDS if at_write else POLL_SECONDS):
        return
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    attempt.killed_after_s = round(time.monotonic() - started, 2)
    attempt.state_at_kill = watcher.epoch()
    attempt.write_interrupted = file_stamp(partial) is not None and file_stamp(partial)[1] >= launched_ns


def test_random_kills_then_resume_match_uninterrupted_run(reference, tmp_path):
    rng = random.Random(KILL_SEED)
    directory = tmp_path / "killed"
    watcher = StateWatcher(directory / "checkpoints" / "last.pt")
    attempts: list[Attempt] = []
    for index in range(KILLS + 1):  # the last launch runs to the end
        attempt = Attempt(index, tmp_path / f"attempt{index}.log", resumed_from=watcher.epoch())
        attempts.append(attempt)
        launched_ns = time.time_ns()
        process = launch([*reference.args, "trainer.resume=auto"], directory, reference.env, attempt.log)
        if index < KILLS:
            moment = kill_moment(index, reference, rng, any(a.write_interrupted for a in attempts))
            run_until_killed(attempt, process, directory, moment, launched_ns)
            if attempt.killed_after_s is not None:
                continue
        if process.wait() != 0:  # a run that ends on its own must succeed, whatever state it found
            pytest.fail(f"attempt {index} failed:\n{attempt.output()[-3000:]}")
        break
    story = "\n".join(str(a) for a in attempts)
    print(story)  # where each kill landed (shown with -s, or on failure)
    assert sum(a.killed_after_s is not None for a in attempts) >= 2, story
    assert any(a.write_interrupted for a in attempts), f"no kill landed during a resume-state write:\n{story}"
    for attempt in attempts:  # each launch went on from the state it found (a kill in start-up may cut it short)
        output = attempt.output()
        if "resumed from" in output or attempt is attempts[-1]:
            assert f"after epoch {attempt.resumed_from} " in output, story
        if attempt.resumed_from > 0:
            assert "epoch 1/" not in output, f"attempt {attempt.index} trained epoch 1 again:\n{story}"
    assert attempts[-1].resumed_from > 0, story  # else this test would not test resuming
    assert_same_result(reference.directory, directory)

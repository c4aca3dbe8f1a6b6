"""tests/cli_runner.py: a `medzoo` command run in the test's process says what the console script would (exit code,
output) and leaves the process as it found it, so that the next test does not inherit a command's state."""

from __future__ import annotations

import logging
import os
import sys

from tests.cli_runner import run_medzoo


def test_a_command_reports_like_the_console_script_and_puts_the_process_back(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDZOO_RUNNER_KEPT", "before")
    before = (list(sys.argv), os.getcwd(), dict(os.environ), list(logging.getLogger().handlers))
    failed = run_medzoo("train", "model=resnet51", f"hydra.run.dir={tmp_path / 'bad'}", cwd=tmp_path,
                        env={"MEDZOO_RUNNER_KEPT": None, "MEDZOO_RUNNER_ADDED": "1"})
    assert failed.returncode == 2 and failed.stdout == ""
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and "model=resnet51" in lines[0] and "Did you mean: resnet50" in lines[0]
    done = run_medzoo("zoo", f"hydra.run.dir={tmp_path / 'zoo'}", cwd=tmp_path)  # Hydra sets up its logging
    assert done.returncode == 0 and "brain_tumor_resnet18_cpu" in done.stdout
    after = (list(sys.argv), os.getcwd(), dict(os.environ), list(logging.getLogger().handlers))
    assert after == before
    assert os.environ["MEDZOO_RUNNER_KEPT"] == "before" and "MEDZOO_RUNNER_ADDED" not in os.environ

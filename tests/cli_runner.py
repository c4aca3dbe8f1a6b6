"""`medzoo ARGS` run inside the test process: `medzoo.cli.main`, which the console script calls, with the same
parsing, configs, output and exit codes, without a new interpreter importing torch, MONAI and scikit-learn again
(6-8 s a call on the 2-core CI machine, more than most of the commands the tests run).

What a command changes in the process is put back afterwards: sys.argv, the environment, the working folder, the
root logger's handlers and level (Hydra points them at the run's log file), warning filters, and torch's
deterministic-algorithms switch. Tests of the console script itself, of process signals (kill and resume), of
several processes (DDP), and of user code imported into the registries (`imports=`) keep a real subprocess.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
import traceback
import warnings
from pathlib import Path

import torch


@contextlib.contextmanager
def _process_state_restored():
    argv, environ, cwd = list(sys.argv), dict(os.environ), os.getcwd()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        with warnings.catch_warnings():
            yield
    finally:
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
            handler.close()
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(environ)
        sys.argv = argv


def run_medzoo(*args: str, env: dict[str, str | None] | None = None, cwd: Path | str | None = None
               ) -> subprocess.CompletedProcess:
    """`medzoo *args` in this process, with `env` set in the environment (a None value unsets the variable) and
    `cwd` as the working folder.

    Returns what `subprocess.run(..., capture_output=True, text=True)` would: the exit code (0, 2 for a one-line
    error, 1 where Hydra reported an exception), stdout and stderr. An exception that escapes the command (none
    should: the console script would print a traceback) is written to stderr as a traceback, with code 1.
    """
    from medzoo import cli

    out, err = io.StringIO(), io.StringIO()
    with _process_state_restored():
        for key, value in (env or {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main(list(args))
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if isinstance(exc.code, str):
                    print(exc.code, file=sys.stderr)
            except Exception:  # noqa: BLE001 - reported as the console script would: a traceback, exit code 1
                traceback.print_exc()
                code = 1
    return subprocess.CompletedProcess(["medzoo", *args], code, out.getvalue(), err.getvalue())

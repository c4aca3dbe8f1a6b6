"""Shared fixtures (real data beside the project, skipped with a reason when absent; an isolated home) and how the
suite is shared out among pytest-xdist workers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MEDZOO_TEST_DATA", REPO.parent / "shared" / "data"))
BRAIN_TUMOR = SHARED_DATA / "brain-tumor-mri"
# pytest-xdist's `-n auto` (pyproject addopts): a worker per core up to this many. Each worker imports torch, MONAI
# and Hydra (about 1 GB) and runs the `medzoo` commands of its tests in its own process (tests/cli_runner.py), so
# more would cost memory, not time.
MAX_TEST_WORKERS = 4
# Files whose tests share no module fixture and each take minutes: each test is a work unit of its own.
SPLIT_FILES = {"test_labs.py"}


def pytest_xdist_auto_num_workers(config) -> int:
    return max(1, min(MAX_TEST_WORKERS, os.cpu_count() or 1))


def pytest_configure(config) -> None:
    """In an xdist worker: the cores shared out among the workers, for torch here and (OMP_NUM_THREADS) for the
    processes it starts. Two workers each running torch on both cores of a 2-core machine spent most of their
    time waiting on each other: a lab that takes 24 s alone took 111 s in the suite, 28 s with a core each."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        import torch

        torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items) -> None:
    """Work units for `--dist loadgroup --no-loadscope-reorder` (pyproject addopts): a test file is one unit, so
    its module fixtures are built once, except the labs, one unit each and handed out first. As one unit, handed
    out last, the seven labs (6 minutes) kept one core busy while the other had nothing left to do."""
    for item in items:
        split = item.path.name in SPLIT_FILES
        item.add_marker(pytest.mark.xdist_group(item.nodeid if split else item.path.name))
    items.sort(key=lambda item: item.path.name not in SPLIT_FILES)  # stable: the rest keep their order


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch):
    """Each test gets its own MEDZOO_HOME and no MEDZOO_DATA, so nothing leaks between tests or from the user."""
    home = tmp_path_factory.mktemp("medzoo-home")
    monkeypatch.setenv("MEDZOO_HOME", str(home))
    monkeypatch.delenv("MEDZOO_DATA", raising=False)
    monkeypatch.setenv("MEDZOO_OFFLINE", "1")
    return home


@pytest.fixture
def brain_tumor_root() -> Path:
    """The real brain-tumour set in ../shared/data, or a skip that says what is missing."""
    if not (BRAIN_TUMOR / "Training").is_dir():
        pytest.skip(f"real brain-tumour data not found at {BRAIN_TUMOR} (set MEDZOO_TEST_DATA to shared/data)")
    return BRAIN_TUMOR

"""Every lab in docs/labs/ runs top to bottom in quick mode (papermill injects QUICK=True; the notebook itself is not
edited), and its last cell's checks hold. Each .ipynb is paired with a jupytext .py (the file people read in
diffs): both must hold the same cells, and no notebook carries outputs that were not produced by running it here.

Labs that need data beyond the package name it on a `**Requires:**` line; they run when MEDZOO_TEST_DATA (or
../shared/data) holds it and skip, saying what is missing, when it does not.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA

LABS = Path(__file__).resolve().parents[1] / "docs" / "labs"
NOTEBOOKS = sorted(LABS.glob("[0-9][0-9]_*.ipynb"))
REQUIRES = re.compile(r"\*\*Requires:\*\*(?P<what>[^\n]*)")
NEEDED = re.compile(r"`(?P<path>[\w./-]+)/?`")  # `brain-tumor-mri/`, `medmnist/adrenalmnist3d.npz` under MEDZOO_DATA


def needed_data(notebook: Path) -> list[str]:
    """The paths under MEDZOO_DATA that the lab's `**Requires:**` line names (none: it runs on the package alone)."""
    found = REQUIRES.search(notebook.with_suffix(".py").read_text())
    return [m.group("path") for m in NEEDED.finditer(found.group("what"))] if found else []


def test_there_are_at_least_six_labs_each_paired_and_without_unmeasured_figures():
    import jupytext

    assert len(NOTEBOOKS) >= 6, [n.name for n in NOTEBOOKS]
    for notebook in NOTEBOOKS:
        text = notebook.with_suffix(".py")
        assert text.exists(), f"{notebook.name} has no paired {text.name} (jupytext --set-formats ipynb,py:percent)"
        ipynb, py = jupytext.read(notebook), jupytext.read(text)
        assert [(c.cell_type, c.source) for c in ipynb.cells] == [(c.cell_type, c.source) for c in py.cells], \
            f"{notebook.name} and {text.name} differ: run `jupytext --sync {text}`"
        assert not any(c.get("outputs") for c in ipynb.cells), f"{notebook.name} carries outputs; commit it clean"
        source = text.read_text()
        assert "TO-MEASURE" not in source, f"{text.name} still has a figure that was never measured"
        assert REQUIRES.search(source), f"{text.name} says nowhere what it requires (**Requires:** line)"
        for heading in ("**Goal.**", "**You will learn**", "**Time.**", "## Questions", "## What you should see"):
            assert heading in source, f"{text.name} lacks '{heading}'"
        parameters = [c for c in py.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(parameters) == 1 and "QUICK = False" in parameters[0].source, \
            f"{text.name}: one cell tagged 'parameters' with QUICK = False (the tests inject QUICK=True)"
        assert "all checks passed" in py.cells[-1].source, f"{text.name}: the last cell checks what the lab shows"
    readme = (LABS / "README.md").read_text()
    assert "TO-MEASURE" not in readme, "docs/labs/README.md still has a time that was never measured"
    assert all(notebook.name in readme for notebook in NOTEBOOKS), "docs/labs/README.md lists every lab"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[n.stem for n in NOTEBOOKS])
def test_lab_runs_in_quick_mode_and_its_checks_hold(notebook, tmp_path, monkeypatch):
    import papermill

    data = SHARED_DATA
    missing = [path for path in needed_data(notebook) if not (data / path).exists()]
    if missing:
        pytest.skip(f"{notebook.name} needs {', '.join(missing)} under {data} (set MEDZOO_TEST_DATA)")
    if needed_data(notebook):
        monkeypatch.setenv("MEDZOO_DATA", str(data))
    monkeypatch.setenv("MEDZOO_OFFLINE", "1")
    executed = tmp_path / notebook.name
    papermill.execute_notebook(str(notebook), str(executed), cwd=str(tmp_path), kernel_name="python3",
                               parameters={"QUICK": True, "WORKDIR": str(tmp_path)}, progress_bar=False,
                               execution_timeout=600)
    outputs = [o for c in json.loads(executed.read_text())["cells"] for o in c.get("outputs", [])]
    assert any("all checks passed" in "".join(o.get("text", "")) for o in outputs)

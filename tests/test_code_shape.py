"""The package stays readable in small pieces: no module over MAX_LINES lines (a module that grows past it has
more than one job; split it along its seams, see docs/architecture.md)."""
from __future__ import annotations

from pathlib import Path

import medzoo

PACKAGE_ROOT = Path(medzoo.__file__).parent
MAX_LINES = 450


def long_modules(root: Path, limit: int) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > limit:
            found.append(f"{path.relative_to(root.parent)}: {lines} lines")
    return found


def test_the_size_check_sees_a_long_module(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "short.py").write_text("x = 1\n" * 10)
    (package / "long.py").write_text("x = 1\n" * 11)
    assert long_modules(package, 10) == ["pkg/long.py: 11 lines"]


def test_no_module_in_the_package_is_over_450_lines():
    assert not long_modules(PACKAGE_ROOT, MAX_LINES), "\n".join(long_modules(PACKAGE_ROOT, MAX_LINES))

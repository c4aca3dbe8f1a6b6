"""Imports go one way: read from the source (every `import`, module level or inside a function), the modules of
`medzoo/zoo` form no circle, and each layer imports only the layers below it."""
from __future__ import annotations

import ast
from pathlib import Path

import medzoo

PACKAGE_ROOT = Path(medzoo.__file__).parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The modules in `known` that the file at `path` imports, wherever in the file the import stands."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from medzoo.zoo import hub` imports the module medzoo.zoo.hub, not only the package
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in known)
    return found


def import_graph(package: Path) -> dict[str, set[str]]:
    files = {module_name(path): path for path in package.rglob("*.py")}
    return {name: imported_modules(path, set(files)) - {name} for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle in `graph` as a list of modules that starts and ends with the same one, or None."""
    state: dict[str, str] = {}
    trail: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        trail.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return trail[trail.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        trail.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_cycle_finder_sees_a_circle_and_a_clean_chain():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_zoo_modules_import_in_one_direction():
    graph = import_graph(PACKAGE_ROOT / "zoo")
    # the package's __init__ re-exports the factory; the modules themselves must not need it
    modules = {name: targets - {"medzoo.zoo"} for name, targets in graph.items() if name != "medzoo.zoo"}
    assert find_cycle(modules) is None, f"import circle: {' -> '.join(find_cycle(modules))}"
    assert all("medzoo.zoo" not in targets for targets in modules.values()), \
        "a zoo module imports the zoo package itself, which imports the factory above it"


def test_the_file_format_is_at_the_bottom_and_the_factory_above_it():
    graph = import_graph(PACKAGE_ROOT / "zoo")
    below_factory = {"medzoo.zoo.checkpoint", "medzoo.zoo.card", "medzoo.zoo.adapt", "medzoo.zoo.registry"}
    for name in below_factory:
        assert "medzoo.zoo.factory" not in graph[name], f"{name} imports the factory above it"
    assert graph["medzoo.zoo.adapt"] == set(), "the adaptation math imports no zoo module"
    assert graph["medzoo.zoo.checkpoint"] <= {"medzoo.zoo.card"}, "the file format builds on the card only"
    assert {"medzoo.zoo.checkpoint", "medzoo.zoo.adapt"} <= graph["medzoo.zoo.factory"]

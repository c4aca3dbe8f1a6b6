"""Imports go one way: read from the source (every `import`, module level or inside a function), no modules of
`medzoo` form a circle, each layer imports only the layers below it, and commands share code through modules
below them, never by importing each other."""
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
            # `from medzoo.zoo import hub` imports the module medzoo.zoo.hub; `from medzoo.zoo import
            # create_model` the package itself
            submodules = [f"{node.module}.{alias.name}" for alias in node.names]
            names = [name for name in submodules if name in known] or [node.module]
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
    below_factory = {"medzoo.zoo.checkpoint", "medzoo.zoo.card", "medzoo.zoo.card_schema", "medzoo.zoo.card_v1",
                     "medzoo.zoo.adapt", "medzoo.zoo.registry"}
    for name in below_factory:
        assert "medzoo.zoo.factory" not in graph[name], f"{name} imports the factory above it"
    assert graph["medzoo.zoo.adapt"] == set(), "the adaptation math imports no zoo module"
    assert graph["medzoo.zoo.card_schema"] == set(), "the card's field checks import no zoo module"
    assert graph["medzoo.zoo.card_v1"] <= {"medzoo.zoo.card_schema"}, \
        "the schema-1 reader builds on the checks only"
    assert graph["medzoo.zoo.card"] <= {"medzoo.zoo.card_schema", "medzoo.zoo.card_v1"}, \
        "the card builds on its checks and its migration only"
    assert graph["medzoo.zoo.checkpoint"] <= {"medzoo.zoo.card"}, "the file format builds on the card only"
    assert {"medzoo.zoo.checkpoint", "medzoo.zoo.adapt"} <= graph["medzoo.zoo.factory"]


# Lower numbers are lower layers; a module may import its own layer and those below. Sub-packages not named
# here sit with their parent.
LAYERS = {
    "medzoo.errors": 0, "medzoo.close_names": 0, "medzoo.paths": 0, "medzoo.download": 0, "medzoo.limits": 0, "medzoo.recipes": 0,
    "medzoo.conf": 0, "medzoo.progress": 0,
    "medzoo.transforms": 1, "medzoo.zoo": 1, "medzoo.datasets.readers": 1,
    "medzoo.datasets": 2, "medzoo.audit": 2,
    "medzoo.loading": 3,
    "medzoo.engine": 4, "medzoo.reporting": 4,
    "medzoo.commands": 5,
    "medzoo.cli": 6, "medzoo": 6,
}


def layer(module: str) -> int:
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in LAYERS:
            return LAYERS[".".join(parts[:end])]
    raise AssertionError(f"{module} has no layer: add its package to LAYERS in {__file__}")


def test_no_circle_anywhere_in_the_package():
    graph = import_graph(PACKAGE_ROOT)
    assert find_cycle(graph) is None, f"import circle: {' -> '.join(find_cycle(graph))}"


def test_every_layer_imports_only_itself_and_the_layers_below():
    upward = [f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})"
              for module, targets in sorted(import_graph(PACKAGE_ROOT).items()) for target in sorted(targets)
              if layer(target) > layer(module)]
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_commands_share_code_through_modules_below_them():
    shared = {"medzoo.commands", "medzoo.commands.common"}
    crossing = [f"{module} imports {target}" for module, targets in sorted(import_graph(PACKAGE_ROOT).items())
                if module.startswith("medzoo.commands.") and module not in shared
                for target in sorted(targets) if target.startswith("medzoo.commands.") and target not in shared]
    assert not crossing, "commands importing each other:\n" + "\n".join(crossing)

"""Published recipes: one YAML per baseline, registered as the Hydra config group `recipe`.

A recipe of your own lives outside the package, in `DIR/recipe/NAME.yaml`, and reaches Hydra through its search
path: `medzoo train recipe=NAME hydra.searchpath=[file://DIR]`. `check_recipe` looks there too, so the early
check of recipe names accepts it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from medzoo.close_names import unknown_name
from medzoo.errors import ConfigError

FILE_SCHEME = "file://"


def recipe_files() -> dict[str, Path]:
    """Recipe name -> YAML file, for every recipe shipped with medzoo."""
    folder = Path(str(resources.files("medzoo.recipes")))
    return {path.stem: path for path in sorted(folder.glob("*.yaml"))}


def user_recipe_files(search_path: Sequence[str]) -> dict[str, Path]:
    """Recipe name -> YAML file under `DIR/recipe/` for each `file://DIR` entry of Hydra's search path
    (`hydra.searchpath=[...]`), first entry first; other schemes (pkg://) are left to Hydra."""
    found: dict[str, Path] = {}
    for entry in search_path:
        if entry.startswith(FILE_SCHEME):
            folder = Path(entry[len(FILE_SCHEME):]).expanduser() / "recipe"
            for path in sorted(folder.glob("*.yaml")):
                found.setdefault(path.stem, path)
    return found


HEADER_FIELD = re.compile(r"[A-Z][\w-]*:\s")  # Command:, Hardware:, Time: ... (one word, then a colon)
SENTENCE_END = re.compile(r"(?<=\.)\s+(?=[A-Z])")


def describe(path: Path) -> str:
    """What the recipe is: the first sentence of its header, which may run over several comment lines (the header
    is the comment lines after the package line, up to the first `Field:` line such as Command:)."""
    words: list[str] = []
    for line in path.read_text().splitlines():
        if "@package" in line:
            continue
        text = line.lstrip("#").strip()
        if not line.startswith("#") or not text or (words and HEADER_FIELD.match(text)):
            break
        words.append(text)
    return SENTENCE_END.split(" ".join(words), maxsplit=1)[0]


def register_recipes() -> None:
    """Put every recipe into Hydra's ConfigStore as group `recipe` (package `_global_`)."""
    # Imported here, not at the top: `medzoo --help` lists the recipes without Hydra.
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    store = ConfigStore.instance()
    for name, path in recipe_files().items():
        store.store(group="recipe", name=name, node=OmegaConf.load(path), package="_global_")


def check_recipe(name: str, search_path: Sequence[str] = ()) -> None:
    """Raise an error listing the closest recipe names when `name` is neither a shipped recipe nor one in the
    `file://` folders of `search_path`; a name in both is an error too (which one Hydra takes is not obvious).
    With a search path entry of another scheme, a name found nowhere is left to Hydra."""
    shipped, own = recipe_files(), user_recipe_files(search_path)
    if name in shipped and name in own:
        raise ConfigError(f"recipe={name}: {own[name]} has the name of a recipe shipped with medzoo; rename the "
                          "file (recipe names are file names).")
    if name in shipped or name in own:
        return
    if any(not entry.startswith(FILE_SCHEME) for entry in search_path):
        return
    error = unknown_name("recipe", name, {**shipped, **own})
    raise type(error)(f"{error} A recipe of your own: DIR/recipe/{name}.yaml and hydra.searchpath=[file://DIR].")

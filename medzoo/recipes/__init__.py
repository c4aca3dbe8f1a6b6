"""Published recipes: one YAML per baseline, registered as the Hydra config group `recipe`."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from medzoo.naming import unknown_name


def recipe_files() -> dict[str, Path]:
    """Recipe name -> YAML file, for every recipe shipped with medzoo."""
    folder = Path(str(resources.files("medzoo.recipes")))
    return {path.stem: path for path in sorted(folder.glob("*.yaml"))}


def describe(path: Path) -> str:
    """The first comment line after the package header: what the recipe is."""
    for line in path.read_text().splitlines():
        if line.startswith("#") and "@package" not in line:
            return line.lstrip("# ").strip()
    return ""


def register_recipes() -> None:
    """Put every recipe into Hydra's ConfigStore as group `recipe` (package `_global_`)."""
    store = ConfigStore.instance()
    for name, path in recipe_files().items():
        store.store(group="recipe", name=name, node=OmegaConf.load(path), package="_global_")


def check_recipe(name: str) -> None:
    """Raise an error listing the closest recipe names when `name` is not a recipe."""
    if name not in recipe_files():
        raise unknown_name("recipe", name, recipe_files())

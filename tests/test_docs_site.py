"""The documentation site: `mkdocs build --strict` succeeds, and the pages written at build time hold what the code
holds (the API's docstrings, each published checkpoint's card, every recipe file's header).

mkdocs, mkdocs-material and mkdocstrings come with `pip install -e '.[dev]'` (or `.[docs]`); without them these
tests fail rather than skip, so CI cannot pass with the site unbuilt.
"""

from __future__ import annotations

import html
import inspect
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD_TIMEOUT_S = 300


def build(config: Path, out: Path) -> subprocess.CompletedProcess:
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        try:
            __import__(module)
        except ImportError:
            pytest.fail(f"{module} is not installed: the site needs pip install -e '.[docs]' (part of '.[dev]').")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "MEDZOO_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(out)],
                          cwd=config.parent, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, env=env)


def page_text(path: Path) -> str:
    """A built page's visible text, one space between words."""
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", path.read_text(), flags=re.S)
    text = re.sub(r"</?(?:a|b|code|em|i|span|strong)\b[^>]*>", "", text)  # inline: no space where they open or close
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", text)).split())


def plain(markdown: str) -> str:
    """A line of Markdown as its rendered text reads: no backticks, one space between words."""
    return " ".join(markdown.replace("`", "").split())


NEW_LAB = "99_new_lab"  # a lab added after this test was written: a notebook and its jupytext twin


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built from a copy of the repository's mkdocs.yml and docs/, plus one new lab (one build for every
    test: a build takes most of this file's time)."""
    work = tmp_path_factory.mktemp("repo")
    shutil.copy(ROOT / "mkdocs.yml", work)
    shutil.copytree(ROOT / "docs", work / "docs", ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
    (work / "medzoo").symlink_to(ROOT / "medzoo")  # mkdocstrings reads the sources beside mkdocs.yml
    labs = work / "docs" / "labs"
    labs.mkdir(exist_ok=True)
    (labs / f"{NEW_LAB}.ipynb").write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}\n')
    (labs / f"{NEW_LAB}.py").write_text("# %% [markdown]\n# # A new lab\n\n# %%\nimport medzoo\n")
    out = work / "site"  # beside the copied docs/, which the tests compare it with
    result = build(work / "mkdocs.yml", out)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return out


def test_every_page_is_built(site):
    from medzoo.cli import COMMANDS

    pages = ["index.html", "getting-started/index.html", "recipes/index.html", "api/index.html",
             "teachers/index.html", "labs/index.html", "zoo/index.html", "zoo/cards/index.html",
             "architecture/index.html", "audit/index.html", "distributed/index.html"]
    pages += [f"guide/{name}/index.html" for name in COMMANDS]  # one user-guide page per command
    missing = [page for page in pages if not (site / page).is_file()]
    assert not missing, f"pages not built: {missing}"


def test_api_page_has_each_public_name_and_its_docstring(site):
    import medzoo
    import medzoo.api

    text = page_text(site / "api" / "index.html")
    names = {name: getattr(medzoo.api, name) for name in medzoo.api.__all__}
    names.update(create_model=medzoo.create_model, list_models=medzoo.list_models)
    for name, obj in names.items():
        first_line = inspect.getdoc(obj).splitlines()[0]
        assert name in text, f"{name} is not on the API page"
        assert plain(first_line) in text, f"the first line of {name}'s docstring is not on the API page: {first_line!r}"


def test_one_model_card_page_per_published_checkpoint(site):
    from medzoo.zoo import hub
    from medzoo.zoo.card import ModelCard
    from medzoo.zoo.checkpoint import read_card

    entries = hub.manifest()
    assert entries, "no published checkpoint: the zoo pages would be empty"
    index = page_text(site / "zoo" / "cards" / "index.html")
    for name, entry in entries.items():
        if entry.shipped:
            card = read_card(hub.resolve(f"{hub.ZOO_PREFIX}{name}"))
        else:
            card = ModelCard.from_dict(entry.card, name)
        page = site / "zoo" / "cards" / name / "index.html"
        assert page.is_file(), f"no model-card page for {name}"
        accuracy = f"{card.metrics['test']['accuracy']:.4f}"
        assert accuracy in page_text(page), f"{name}: the card's test accuracy {accuracy} is not on its page"
        assert name in index and accuracy in index, f"{name} is missing from the model-card index"


def test_recipes_page_quotes_every_recipe_file(site):
    from medzoo.recipes import recipe_files

    text = page_text(site / "recipes" / "index.html")
    for name, path in recipe_files().items():
        header = [line[1:] for line in path.read_text().splitlines() if line.startswith("#") and "@package" not in line]
        assert name in text, f"recipe {name} ({path.name}) is not on the recipes page"
        # the header comment holds the command, the hardware and the measured figures: all of it, as it stands
        assert " ".join(" ".join(header).split()) in text, f"the header of {path.name} is not quoted in full"


def test_pages_load_nothing_from_outside(site):
    outside = re.compile(r"""<(?:link|script|img)\b[^>]*\b(?:href|src)=["']?(?:https?:)?//""", re.I)
    for page in site.rglob("*.html"):
        match = outside.search(page.read_text())
        assert match is None, f"{page.relative_to(site)} loads from another host: {match.group(0)}"


def test_labs_notebooks_are_files_to_download_and_their_twins_are_left_out(site):
    """A lab added later (`NEW_LAB` in the fixture) is no error: its notebook is copied as a file that the labs
    page can link to, its jupytext twin is not published (nor is any other .py file, such as the build hook)."""
    notebooks = sorted(path.name for path in (site.parent / "docs" / "labs").glob("*.ipynb"))  # as copied
    built = sorted(path.name for path in (site / "labs").glob("*.ipynb"))
    assert f"{NEW_LAB}.ipynb" in built and built == notebooks
    assert not list(site.rglob("*.py")), "a Python file (the hook, a lab's jupytext twin) was published"


def test_getting_started_has_the_readme_quickstart_commands():
    readme = (ROOT / "README.md").read_text()
    quickstart = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    commands = [line for block in re.findall(r"```bash\n(.*?)```", quickstart, re.S) for line in block.splitlines()]
    assert len(commands) >= 2, "README.md's Quickstart has lost its commands"
    page = (ROOT / "docs" / "getting-started.md").read_text()
    missing = [command for command in commands if command not in page]
    assert not missing, f"docs/getting-started.md does not have README.md's Quickstart command(s): {missing}"


# The config sections whose dotted settings (`trainer.max_epochs=...`) the user-guide pages name.
FILE_SUFFIXES = (".csv", ".html", ".json", ".md", ".png", ".py", ".yaml")  # `bench.json` is a file, not a setting
SECTIONS = ("audit", "bench", "data", "explain", "loader", "logger", "model", "optim", "paths", "sched", "trainer",
            "transforms")


def test_guide_names_only_settings_that_exist():
    """Every dotted setting in the user guide and the hand-written pages of the site is a key of the composed
    config of some command, with some choice of its config groups (data=..., model=..., explain=...)."""
    from importlib import resources

    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from medzoo.cli import COMMANDS
    from medzoo.recipes import register_recipes

    conf = Path(str(resources.files("medzoo.conf")))
    choices = {group: sorted(p.stem for p in (conf / group).glob("*.yaml"))
               for group in ("data", "explain", "loader", "logger", "model", "optim", "sched", "transforms")}
    known: set[str] = set()

    def walk(node: object, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                known.add(f"{prefix}{key}")
                walk(value, f"{prefix}{key}.")

    register_recipes()
    with initialize_config_module("medzoo.conf", version_base="1.3"):
        for command in COMMANDS.values():  # `ckpt: ???` composes; only reading it would fail
            base = compose(command.config, return_hydra_config=True)
            groups = [group for group in choices if group in base.hydra.runtime.choices]  # this command's groups
            walk(OmegaConf.to_container(base, resolve=False), "")
            for overrides in ([f"{group}={choice}"] for group in groups for choice in choices[group]):
                walk(OmegaConf.to_container(compose(command.config, overrides=overrides), resolve=False), "")
    pages = [*(ROOT / "docs" / "guide").glob("*.md"), *(ROOT / "docs").glob("[a-z]*.md")]
    pages = [page for page in pages if page.name not in ("architecture.md", "audit.md", "distributed.md")]
    unknown = set()
    for page in pages:
        text = page.read_text()
        for code in re.findall(r"`([^`\n]+)`", text) + re.findall(r"```bash\n(.*?)```", text, re.S):
            for setting in re.findall(r"(?<![\w./$-])([a-z_]+(?:\.[a-z_0-9+]+)+)(?==|\b)", code):
                if setting.split(".")[0] in SECTIONS and not setting.endswith(FILE_SUFFIXES) and setting not in known:
                    unknown.add(f"{page.relative_to(ROOT)}: {setting}")
    assert not unknown, f"settings that no command has: {sorted(unknown)}"

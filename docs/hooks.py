"""MkDocs build hooks: the pages written from the code's own data at build time, never retyped.

- `recipes.md` from the shipped recipe files (`medzoo.recipes.recipe_files()`): each file's header comment holds
  what the recipe is, its command, the hardware and the measured figures; the page quotes it as it stands.
- `zoo/cards/NAME.md`, one per published checkpoint (`medzoo.zoo.hub.manifest()`), written by
  `medzoo.zoo.card_doc.model_card` from the card stored in the checkpoint (or in the manifest, for a checkpoint
  that is not shipped in the package), and `zoo/cards/index.md` listing them.

The nav in mkdocs.yml gets these pages, and the maintainers' training histories (`docs/zoo/*.md`), under
"Model zoo". Nothing here touches the network: a checkpoint is resolved with MEDZOO_OFFLINE=1.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

from mkdocs.structure.files import File, Files

CARDS_DIR = "zoo/cards"
ZOO_SECTION = "Model zoo"
_COMMAND = re.compile(r"#\s*Command:\s+(.+?)(?:\s{2,}|\s\(|$)")


# ------------------------------------------------------------------------------------------------------------
# Recipes


def recipe_parts(text: str) -> tuple[list[str], str]:
    """(header comment lines without '# ', the YAML after the header) of a recipe file; the `@package` line is
    Hydra's, not the author's, and is left out."""
    lines = text.splitlines()
    header: list[str] = []
    body_start = 0
    for index, line in enumerate(lines):
        if not line.startswith("#"):
            body_start = index
            break
        if "@package" not in line:
            header.append(line[1:].removeprefix(" "))
    else:
        body_start = len(lines)
    return header, "\n".join(lines[body_start:]).strip()


def recipe_summary(header: list[str]) -> str:
    """What the recipe is: the header's lines before its `Command:` line, as one line."""
    lines = []
    for line in header:
        if line.lstrip().startswith("Command:"):
            break
        lines.append(line.strip())
    return " ".join(lines).replace("|", "/")


def recipe_command(text: str) -> str | None:
    """The command a recipe's header names (`# Command:  medzoo train recipe=NAME ...`), else None."""
    for line in text.splitlines():
        match = _COMMAND.match(line)
        if match:
            return match.group(1).strip()
    return None


def recipes_page() -> str:
    from medzoo.recipes import recipe_files

    files = recipe_files()
    out = [
        "# Recipes",
        "",
        "Every recipe shipped with medzoo, written at build time from its file in `medzoo/recipes/`. A recipe "
        "lists only what differs from `medzoo/conf/train.yaml`; its header comment says what it is, the command, "
        "the hardware and what it reached when it was measured, and is quoted here as it stands in the file. "
        "`medzoo --help` lists the same recipes; `medzoo train recipe=NAME --cfg job` prints one fully resolved.",
        "",
        "| recipe | what | command |",
        "|---|---|---|",
    ]
    for name, path in files.items():
        text = path.read_text()
        command = recipe_command(text)
        out.append(f"| [`{name}`](#{name}) | {recipe_summary(recipe_parts(text)[0])} | "
                   + (f"`{command}`" if command else "") + " |")
    out.append("")
    for name, path in files.items():
        header, body = recipe_parts(path.read_text())
        out += [
            f"## {name} {{#{name}}}",
            "",
            f"From `medzoo/recipes/{path.name}`:",
            "",
            # the comment as it stands, line breaks kept and long lines wrapped (a code block would scroll)
            '<pre style="white-space: pre-wrap"><code>' + html.escape("\n".join(header)) + "</code></pre>",
            "",
            "What it sets:",
            "",
            "```yaml",
            body,
            "```",
            "",
        ]
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------------------
# Model cards


def published_cards() -> dict:
    """Published name -> (manifest entry, ModelCard), read offline: the card in the shipped file, else the one
    the manifest keeps for a checkpoint that is not shipped (as `medzoo zoo info` does)."""
    from medzoo.zoo import hub
    from medzoo.zoo.card import ModelCard
    from medzoo.zoo.checkpoint import read_card

    previous = os.environ.get("MEDZOO_OFFLINE")
    os.environ["MEDZOO_OFFLINE"] = "1"
    try:
        cards = {}
        for name, entry in hub.manifest().items():
            if entry.card is not None and not entry.shipped:
                card = ModelCard.from_dict(entry.card, f"{hub.MANIFEST}: {name}")
            else:
                card = read_card(hub.resolve(f"{hub.ZOO_PREFIX}{name}"))
            cards[name] = (entry, card)
        return cards
    finally:
        if previous is None:
            os.environ.pop("MEDZOO_OFFLINE", None)
        else:
            os.environ["MEDZOO_OFFLINE"] = previous


def card_page(name: str, entry, card, history: bool) -> str:
    from medzoo.zoo.card_doc import model_card

    published = dict(card.provenance.published or {})
    published.setdefault("task", entry.task)
    where = ("shipped inside the package" if entry.shipped else
             ("downloaded on first use from " + ", ".join(f"`{url}`" for url in entry.urls)) if entry.urls
             else "kept in `$MEDZOO_HOME/checkpoints` only (no URL yet)")
    size = f"{entry.size / 2**20:.1f} MB, " if entry.size else ""
    lines = [
        model_card(name, card, published).rstrip(),
        "",
        "## The file",
        "",
        f"- `{entry.filename}` ({size}{where}); sha256 `{entry.sha256}`.",
        f"- Use it by name: `medzoo eval ckpt={name} ...`, `medzoo predict ckpt={name} inputs=...`; "
        f"`medzoo zoo info name={name}` prints this card as JSON.",
        "- This page is written at build time from the card stored in the checkpoint "
        "(`medzoo.zoo.card_doc.model_card`).",
    ]
    if history:
        lines.append(f"- How it was trained, and every run tried on the way: [{name} (maintainers' notes)](../{name}.md).")
    return "\n".join(lines) + "\n"


def _figure(metrics: dict, split: str, key: str) -> str:
    value = metrics.get(split, {}).get(key)
    return "" if value is None else f"{value:.4f}"


def cards_index(cards: dict) -> str:
    lines = [
        "# Model cards",
        "",
        "One page per published checkpoint, written at build time from the card stored in it. "
        "`medzoo zoo list` shows the same list on the command line.",
        "",
        "| checkpoint | task | test accuracy | test AUC |",
        "|---|---|---|---|",
    ]
    for name, (entry, card) in cards.items():
        lines.append(f"| [{name}]({name}.md) | {entry.task.replace('|', '/')} | "
                     f"{_figure(card.metrics, 'test', 'accuracy')} | {_figure(card.metrics, 'test', 'auc')} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------------------
# MkDocs events

_cards: dict = {}


def _histories(docs_dir: Path) -> list[str]:
    return sorted(p.name for p in (docs_dir / "zoo").glob("*.md") if p.name not in ("README.md", "index.md"))


def on_config(config):
    """Read the cards once, and put their pages and the training histories into the nav under "Model zoo"."""
    _cards.clear()
    _cards.update(published_cards())
    docs_dir = Path(config["docs_dir"])
    for item in config["nav"] or []:
        if isinstance(item, dict) and ZOO_SECTION in item:
            section = item[ZOO_SECTION]
            section.append({"Model cards": [f"{CARDS_DIR}/index.md",
                                            *({name: f"{CARDS_DIR}/{name}.md"} for name in _cards)]})
            histories = _histories(docs_dir)
            if histories:
                section.append({"Training histories": [{Path(h).stem: f"zoo/{h}"} for h in histories]})
    return config


def on_files(files: Files, config) -> Files:
    """Add the generated pages to the site."""
    docs_dir = Path(config["docs_dir"])
    generated = {"recipes.md": recipes_page(), f"{CARDS_DIR}/index.md": cards_index(_cards)}
    histories = set(_histories(docs_dir))
    for name, (entry, card) in _cards.items():
        generated[f"{CARDS_DIR}/{name}.md"] = card_page(name, entry, card, f"{name}.md" in histories)
    for uri, content in generated.items():
        existing = files.get_file_from_path(uri)
        if existing is not None:  # a hand-written page of the same name would hide the generated one
            raise ValueError(f"docs/{uri} exists, but the build writes this page itself (docs/hooks.py); remove it.")
        files.append(File.generated(config, uri, content=content))
    return files

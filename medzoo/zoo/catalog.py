"""What the zoo publishes, for people: one entry per published checkpoint, and each checkpoint's full card.
`medzoo zoo list` / `medzoo zoo info name=NAME` print these; from Python, `medzoo.zoo.list()` / `medzoo.zoo.info(name)`."""

from __future__ import annotations

from typing import Any

from medzoo.close_names import unknown_name
from medzoo.zoo import hub
from medzoo.zoo.card import ModelCard
from medzoo.zoo.checkpoint import read_card


def where(entry: hub.Published) -> str:
    """How a published checkpoint reaches this machine: packaged, downloaded, or only from a cache."""
    return "packaged" if entry.shipped else ("download" if entry.urls else "cache only")


def published() -> list[dict[str, Any]]:
    """One dict per published checkpoint: `name`, `task`, `test` (headline test metrics), `where` (packaged |
    download | cache only) and `sha256`."""
    return [{"name": name, "task": entry.task, "test": dict(entry.summary.get("test", {})), "where": where(entry),
             "sha256": entry.sha256} for name, entry in hub.manifest().items()]


def info(name: str) -> dict[str, Any]:
    """A published checkpoint's full card as a dict (`metrics.test`, `classes`, `preprocessing`, `provenance`, ...),
    with its `name` and `sha256`; read without building the model (a shipped card from its file, another from the
    manifest, so nothing is downloaded)."""
    entries = hub.manifest()
    if name not in entries:
        raise unknown_name("checkpoint", name, entries)
    entry = entries[name]
    if entry.card is not None and not entry.shipped:
        stored = ModelCard.from_dict(entry.card, f"{hub.MANIFEST}: {name}")
    else:
        stored = read_card(hub.resolve(f"{hub.ZOO_PREFIX}{name}"))
    return {"name": name, "sha256": entry.sha256, **stored.to_dict()}

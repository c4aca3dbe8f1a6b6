"""The clean-split manifest: duplicate groups with a representative, files to drop, and the de-leaked test set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medzoo.audit.duplicates import Duplicates
from medzoo.audit.hashing import ImageFacts
from medzoo.errors import DataError

# A manifest lists each file a few times (about 100 bytes a file); this allows millions of files and no more.
MANIFEST_MAX_BYTES = 256 * 2**20


def representative(members: list[int], facts: list[ImageFacts], test_split: str) -> int:
    """The member a group keeps: a test file first (evaluation sets are not thinned in favour of training
    copies), then the largest decoded image (the least degraded copy), then the first key."""
    def rank(index: int) -> tuple:
        f = facts[index]
        return (f.split != test_split, not f.readable, -((f.width or 0) * (f.height or 0)), f.key)

    return min(members, key=rank)


def clean_split(facts: list[ImageFacts], duplicates: Duplicates, classes: list[str], train_split: str,
                test_split: str) -> dict[str, Any]:
    """Build clean_split.json: groups, `drop` (all but each group's representative), `test_deleaked` (readable
    test files with no exact or near duplicate in the training split) and the files behind label conflicts."""
    groups, drop = [], []
    for number, members in enumerate(duplicates.groups):
        keep = representative(members, facts, test_split)
        labels = sorted({classes[facts[m].label] for m in members})
        groups.append({"id": number, "representative": facts[keep].key,
                       "members": sorted(facts[m].key for m in members),
                       "labels": labels, "splits": sorted({facts[m].split for m in members}),
                       "label_conflict": len(labels) > 1})
        drop += [facts[m].key for m in members if m != keep]
    leaked = set()
    for pair in duplicates.pairs:
        splits = (facts[pair.a].split, facts[pair.b].split)
        if splits == (train_split, test_split):
            leaked.add(pair.b)
        elif splits == (test_split, train_split):
            leaked.add(pair.a)
    tests = [i for i, f in enumerate(facts) if f.split == test_split]
    conflicted = {i for p in duplicates.pairs if p.label_conflict for i in (p.a, p.b)}
    return {
        "train_split": train_split,
        "test_split": test_split,
        "classes": classes,
        "groups": groups,
        "drop": sorted(drop),
        "test_deleaked": sorted(facts[i].key for i in tests if i not in leaked and facts[i].readable),
        "test_leaked": sorted(facts[i].key for i in leaked),
        "label_conflict_files": sorted(facts[i].key for i in conflicted),
        "unreadable": sorted(f.key for f in facts if not f.readable),
        "notes": {
            "drop": "all but one file per duplicate group; a group's test file is kept over its training copies",
            "test_deleaked": "readable test files with no exact or near duplicate in the training split",
            "groups": "connected components of exact and near pairs; use them as groups for validation splits",
        },
    }


def audit_manifest(train: list, test: list, classes: list[str], train_split: str, test_split: str,
                   settings=None) -> dict[str, Any]:
    """The clean-split manifest of a dataset's records, with default audit settings unless given."""
    from medzoo.audit.duplicates import find_duplicates
    from medzoo.audit.hashing import fingerprint_records
    from medzoo.audit.settings import AuditSettings

    settings = settings or AuditSettings()
    prints = fingerprint_records(train + test, settings)
    return clean_split(prints.facts, find_duplicates(prints, settings), classes, train_split, test_split)


def read_clean_split(path: Path) -> dict[str, Any]:
    """A clean-split manifest (`data.clean_split=PATH`, or the cached audit) read back as data: its size bounded
    before it is read, and what training uses checked: `groups` (each an integer `id` and its `members`), `drop`
    and `test_deleaked`, file keys all. Anything else is a DataError naming the file and the fix."""
    redo = ("Write it again with `medzoo audit data=... data.root=... hydra.run.dir=OUT` (OUT/clean_split.json), or "
            "set data.clean_split=auto.")
    try:
        size = path.stat().st_size
        if size > MANIFEST_MAX_BYTES:
            raise DataError(f"{path}: {size:,} bytes, more than the {MANIFEST_MAX_BYTES:,} a clean-split manifest "
                            f"may hold. {redo}")
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DataError(f"{path}: not a readable clean-split manifest ({type(exc).__name__}: {exc}). {redo}") from exc

    def keys(value: Any) -> bool:
        return isinstance(value, list) and all(isinstance(key, str) for key in value)

    problem = None
    if not isinstance(manifest, dict):
        problem = f"a JSON object expected, not {type(manifest).__name__}"
    elif not all(keys(manifest.get(name)) for name in ("drop", "test_deleaked")):
        problem = "`drop` and `test_deleaked` must be lists of file keys"
    elif not isinstance(manifest.get("groups"), list) or not all(
            isinstance(g, dict) and type(g.get("id")) is int and keys(g.get("members")) for g in manifest["groups"]):
        problem = "`groups` must be a list of {\"id\": integer, \"members\": [file keys]}"
    if problem:
        raise DataError(f"{path}: not a clean-split manifest: {problem}. {redo}")
    return manifest

"""The clean-split manifest: duplicate groups with a representative, files to drop, and the de-leaked test set."""

from __future__ import annotations

from typing import Any

from medzoo.audit.duplicates import Duplicates
from medzoo.audit.hashing import ImageFacts


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

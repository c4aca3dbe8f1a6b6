"""The audit across data sources: can the source be told from an image or its file metadata, and does the label
depend on the source? When both hold, a model can learn where an image comes from instead of what it shows.

Files of a multi-source audit carry their source in the key, `<split>/<source>:<path>` (see
`medzoo.datasets.multisource.MultiSourceData.records`); duplicates across sources are found by the ordinary
duplicate search, since every source's files are fingerprinted together.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from medzoo.audit.hashing import ImageFacts
from medzoo.audit.settings import AuditSettings
from medzoo.audit.shortcut import metadata_features, models

SOURCE_SEPARATOR = ":"


def source_of_key(key: str) -> str | None:
    """The source named in an audit key `<split>/<source>:<path>`, or None for a one-source key."""
    rest = key.split("/", 1)[-1]
    return rest.split(SOURCE_SEPARATOR, 1)[0] if SOURCE_SEPARATOR in rest else None


def cramers_v(table: np.ndarray) -> float:
    """Association of two categorical variables from their contingency table: 0 independent, 1 determined."""
    table = np.asarray(table, dtype=np.float64)
    table = table[table.sum(axis=1) > 0][:, table.sum(axis=0) > 0]
    total = table.sum()
    if total == 0 or min(table.shape) < 2:
        return 0.0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / total
    chi2 = float(((table - expected) ** 2 / expected).sum())
    return float(np.sqrt(chi2 / (total * (min(table.shape) - 1))))


def _cv_balanced_accuracy(model: Any, features: np.ndarray, target: np.ndarray, folds: int, seed: int) -> float:
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(cross_val_score(model, features, target, cv=splitter, scoring="balanced_accuracy").mean())


def source_shortcut_check(facts: list[ImageFacts], thumbs: np.ndarray, classes: list[str], train_split: str,
                          settings: AuditSettings) -> dict[str, Any]:
    """How well the source is predicted from file metadata and from the image (a linear model on the audit's
    normalised thumbnails), and how strongly the label depends on the source, per split.

    Balanced accuracies are cross-validated; chance is 1 / number of sources. `shortcut` is true when the source
    is predictable (the better score >= `source_predictable`) and the label depends on it (Cramér's V of the
    training split >= `source_label_association`).
    """
    readable = [i for i, f in enumerate(facts) if f.readable and source_of_key(f.key) is not None]
    names = sorted({source_of_key(facts[i].key) for i in readable})
    if len(names) < 2:
        return {"skipped": f"needs files of at least two sources (found {names or 'none'})"}
    sources = np.array([names.index(source_of_key(facts[i].key)) for i in readable])
    smallest = min(Counter(sources.tolist()).values())
    folds = min(settings.cv_folds, smallest)
    result: dict[str, Any] = {"sources": names, "files": len(readable), "chance": round(1.0 / len(names), 4)}
    if folds < 2:
        return {**result, "skipped": f"needs two decoded files of every source (smallest: {smallest})"}
    features, _, _ = metadata_features([facts[i] for i in readable])
    tree, columns = models(settings.seed)["decision tree, all metadata"]
    result["from_metadata"] = round(_cv_balanced_accuracy(tree, features[:, columns], sources, folds,
                                                          settings.seed), 4)
    image_model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
    result["from_image"] = round(_cv_balanced_accuracy(image_model, thumbs[readable], sources, folds,
                                                       settings.seed), 4)
    counts: dict[str, dict[str, dict[str, int]]] = {}
    association: dict[str, float] = {}
    for split in sorted({facts[i].split for i in readable}):
        table = np.zeros((len(names), len(classes)), dtype=np.int64)
        for row, i in enumerate(readable):
            if facts[i].split == split:
                table[sources[row], facts[i].label] += 1
        counts[split] = {name: {cls: int(n) for cls, n in zip(classes, table[s], strict=True)}
                         for s, name in enumerate(names)}
        association[split] = round(cramers_v(table), 4)
    result.update(counts=counts, label_source_association=association)
    train_association = association.get(train_split, max(association.values()))
    predictable = max(result["from_metadata"], result["from_image"])
    result["shortcut"] = bool(predictable >= settings.source_predictable
                              and train_association >= settings.source_label_association)
    return result


def cross_source_pairs(facts: list[ImageFacts], pairs: list[Any]) -> list[dict[str, Any]]:
    """The duplicate pairs whose two files come from different sources, with their splits."""
    found = []
    for pair in pairs:
        a, b = facts[pair.a], facts[pair.b]
        source_a, source_b = source_of_key(a.key), source_of_key(b.key)
        if source_a is not None and source_b is not None and source_a != source_b:
            found.append({"a": a.key, "b": b.key, "splits": [a.split, b.split],
                          "straddles_train_test": a.split != b.split})
    return found


def source_summary(sources: dict[str, Any], cross: list[dict[str, Any]]) -> dict[str, Any]:
    """The headline figures of the source check (summary.json)."""
    keys = ("sources", "chance", "from_metadata", "from_image", "label_source_association", "shortcut", "skipped")
    return {**{k: sources[k] for k in keys if k in sources}, "cross_source_pairs": len(cross),
            "cross_source_pairs_straddling_train_test": sum(p["straddles_train_test"] for p in cross)}


def source_section(doc: Any, sources: dict[str, Any], cross: list[dict[str, Any]], max_listed: int) -> None:
    """The report's section on sources: predictability, label dependence, counts and cross-source copies."""
    if "skipped" in sources:
        doc.text(f"Skipped: {sources['skipped']}.")
        return
    doc.text(f"{sources['files']} decoded files of {len(sources['sources'])} sources ({', '.join(sources['sources'])}; "
             f"chance {sources['chance']:.2f}). The source is predicted with a balanced accuracy of "
             f"{sources['from_metadata']:.3f} from file metadata (width, height, mode, bytes; a decision tree) and "
             f"{sources['from_image']:.3f} from the image (a linear model on normalised thumbnails), cross-validated.")
    doc.table(["split", "Cramér's V of source x class"], [[s, v] for s, v in sources["label_source_association"].items()])
    for split, table in sources["counts"].items():
        classes = list(next(iter(table.values())))
        doc.table([f"{split}: source", *classes], [[name, *row.values()] for name, row in table.items()])
    verdict = ("a source shortcut: the source can be told from the image or its file, and the training labels depend "
               "on it, so a model can learn where an image comes from instead of what it shows; report metrics per "
               "source and balance sources x classes in training (data.balance=source_class)"
               if sources["shortcut"] else "no source shortcut flagged")
    doc.text(f"Verdict: {verdict}.")
    straddling = [p for p in cross if p["straddles_train_test"]]
    doc.text(f"Copies across sources: {len(cross)} duplicate pair(s) join files of two sources, {len(straddling)} of "
             "them across training and test (a file that two public sets share must not straddle them).")
    if cross:
        doc.table(["file", "copy in another source", "splits"],
                  [[p["a"], p["b"], " / ".join(p["splits"])] for p in cross[:max_listed]])

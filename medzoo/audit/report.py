"""What the audit writes: pairs.csv, summary.json and the readable report (report.md and report.html)."""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from medzoo.audit.document import Document, Picture
from medzoo.audit.duplicates import Duplicates, Pair
from medzoo.audit.hashing import ImageFacts
from medzoo.audit.label_issues import LabelIssues
from medzoo.audit.settings import AuditSettings
from medzoo.audit.sources import source_section, source_summary
from medzoo.audit.stats import class_balance, image_sizes

PAIR_COLUMNS = ("path_a", "path_b", "kind", "label_conflict")
DETAIL_COLUMNS = (*PAIR_COLUMNS, "correlation", "aligned_correlation", "phash_distance", "label_a", "label_b", "cross_split")


@dataclass
class AuditResult:
    """Everything one audit found, ready to be written."""

    dataset: str
    root: Path
    classes: list[str]
    train_split: str
    test_split: str
    facts: list[ImageFacts]
    duplicates: Duplicates
    manifest: dict[str, Any]
    shortcut: dict[str, Any]
    settings: AuditSettings
    seconds: float
    label_issues: LabelIssues | None = None  # with audit.label_issues=true
    sources: dict[str, Any] | None = None  # several sources: the source check (audit/sources.py)
    cross_source: list[dict[str, Any]] | None = None  # duplicate pairs that join two sources

    @property
    def splits(self) -> list[str]:
        """Split folder names, training first."""
        return [self.train_split, self.test_split]


def write_pairs(path: Path, result: AuditResult, detail: bool = False) -> Path:
    """One row per duplicate pair, paths as `split/class/file` relative to the data root."""
    facts, classes = result.facts, result.classes
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(DETAIL_COLUMNS if detail else PAIR_COLUMNS)
        for p in result.duplicates.pairs:
            row = [facts[p.a].key, facts[p.b].key, p.kind, str(p.label_conflict).lower()]
            if detail:
                row += [f"{p.correlation:.4f}", f"{p.aligned:.4f}", p.phash_distance, classes[facts[p.a].label], classes[facts[p.b].label],
                        str(p.cross_split).lower()]
            writer.writerow(row)
    return path


def pair_scope(pair: Pair, facts: list[ImageFacts]) -> str:
    """`within <split>` or `across splits`."""
    return "across splits" if pair.cross_split else f"within {facts[pair.a].split}"


def summarize(result: AuditResult) -> dict[str, Any]:
    """The headline counts (summary.json)."""
    facts, pairs, manifest = result.facts, result.duplicates.pairs, result.manifest
    kinds = Counter((pair_scope(p, facts), p.kind) for p in pairs)
    tests = sum(f.split == result.test_split for f in facts)
    leaked = len(manifest["test_leaked"])
    return {
        "dataset": result.dataset, "root": str(result.root), "seconds": round(result.seconds, 2),
        "files": len(facts), "files_per_split": {s: sum(f.split == s for f in facts) for s in result.splits},
        "classes": result.classes, "unreadable": len(manifest["unreadable"]),
        "pairs": len(pairs), "exact_pairs": sum(p.kind == "exact" for p in pairs),
        "near_pairs": sum(p.kind == "near" for p in pairs),
        "cross_split_pairs": sum(p.cross_split for p in pairs),
        "cross_split_exact_pairs": sum(p.cross_split and p.kind == "exact" for p in pairs),
        "cross_split_near_pairs": sum(p.cross_split and p.kind == "near" for p in pairs),
        "pairs_by_scope": {f"{scope}/{kind}": n for (scope, kind), n in sorted(kinds.items())},
        "label_conflict_pairs": sum(p.label_conflict for p in pairs),
        "label_conflict_files": len(manifest["label_conflict_files"]),
        "hash_candidates_checked": result.duplicates.candidates, "pairs_aligned": result.duplicates.aligned,
        "groups": len(manifest["groups"]), "files_in_groups": sum(len(g["members"]) for g in manifest["groups"]),
        "drop": len(manifest["drop"]),
        "test_files": tests, "test_leaked": leaked, "test_deleaked": len(manifest["test_deleaked"]),
        "test_leaked_share": round(leaked / tests, 4) if tests else 0.0,
        "shortcut": {k: result.shortcut.get(k) for k in ("baseline_accuracy", "best_model", "best_accuracy", "lift",
                                                         "shortcut", "train_to_test", "skipped")
                     if k in result.shortcut},
        "settings": asdict(result.settings),
        **({"label_issues": label_issue_summary(result)} if result.label_issues is not None else {}),
        **({"sources": source_summary(result.sources, result.cross_source or [])} if result.sources else {}),
    }


def label_issue_counts(result: AuditResult) -> dict[str, dict[str, dict[str, int]]]:
    """Files judged and flagged per split and given class: {split: {class: {"checked": n, "flagged": m}}}."""
    found, facts = result.label_issues, result.facts
    flagged = Counter((facts[i.index].split, i.given) for i in found.issues)
    checked = Counter((facts[i].split, facts[i].label) for i in found.checked)
    return {split: {name: {"checked": checked[split, label], "flagged": flagged[split, label]}
                    for label, name in enumerate(result.classes)} for split in result.splits}


def label_issue_summary(result: AuditResult) -> dict[str, Any]:
    """summary.json's `label_issues`: the counts and how they were found."""
    found = result.label_issues
    if found.skipped:
        return {"skipped": found.skipped}
    return {"flagged": len(found.issues), "checked": len(found.checked), "per_split_class": label_issue_counts(result),
            "features": found.features, "dims": found.dims, "folds": found.folds,
            "out_of_sample_accuracy": found.accuracy, "seconds": round(found.seconds, 2),
            "checkpoints": found.checkpoints, "notes": found.notes}


def build_report(result: AuditResult, summary: dict[str, Any]) -> Document:
    """The readable report: counts, duplicates, leaks, conflicts, sizes, shortcut and what they mean."""
    doc = Document(f"Dataset audit: {result.dataset}")
    facts, classes, limit = result.facts, result.classes, result.settings.max_listed
    doc.text(f"Data root: {result.root}. {summary['files']} files "
             f"({', '.join(f'{n} {s}' for s, n in summary['files_per_split'].items())}), {len(classes)} classes; "
             f"audited in {summary['seconds']:.1f} s.")

    doc.heading("What this means for evaluation")
    doc.bullets(implications(result, summary))

    doc.heading("Summary")
    doc.table(["finding", "count"], [
        ["unreadable files", summary["unreadable"]],
        ["exact duplicate pairs (byte-identical)", summary["exact_pairs"]],
        ["near-duplicate pairs (same picture, other bytes)", summary["near_pairs"]],
        ["pairs across splits (leaks)", summary["cross_split_pairs"]],
        ["pairs with different labels (conflicts)", summary["label_conflict_pairs"]],
        ["duplicate groups", summary["groups"]],
        ["files to drop for de-duplication", summary["drop"]],
        [f"{result.test_split} files with a duplicate in {result.train_split}", summary["test_leaked"]],
        [f"{result.test_split} files without one (de-leaked test set)", summary["test_deleaked"]],
    ])

    doc.heading("Class balance")
    balance = class_balance(facts, classes, result.splits)
    doc.table(["split", *classes, "total"],
              [[s, *balance[s].values(), sum(balance[s].values())] for s in result.splits])

    doc.heading("Duplicates within and across splits")
    pairs = result.duplicates.pairs
    scopes = [f"within {s}" for s in result.splits] + ["across splits"]
    doc.table(["where", "exact pairs", "near pairs", "label conflicts"],
              [[scope, *(sum(pair_scope(p, facts) == scope and p.kind == k for p in pairs)
                         for k in ("exact", "near")),
                sum(pair_scope(p, facts) == scope and p.label_conflict for p in pairs)] for scope in scopes])
    leaked = set(result.manifest["test_leaked"])
    rows = []
    for label, name in enumerate(classes):
        tests = [f.key for f in facts if f.split == result.test_split and f.label == label]
        hit = sum(key in leaked for key in tests)
        rows.append([name, len(tests), hit, f"{hit / len(tests):.0%}" if tests else "-"])
    doc.text(f"{result.test_split} files that have an exact or near copy in {result.train_split}, per class:")
    doc.table(["class", f"{result.test_split} files", "with a copy in training", "share"], rows)
    doc.text("Every pair is listed in pairs.csv (pairs_detail.csv adds the pixel correlations and labels); the groups, the "
             "files to drop and the de-leaked test list are in clean_split.json.")

    conflicts = [p for p in pairs if p.label_conflict]
    doc.heading("Label conflicts")
    if conflicts:
        doc.text(f"{len(conflicts)} pair(s) show the same image under different labels"
                 f"{f' (first {limit} listed)' if len(conflicts) > limit else ''}:")
        doc.table(["file a", "label a", "file b", "label b", "kind", "aligned correlation"],
                  [[facts[p.a].key, classes[facts[p.a].label], facts[p.b].key, classes[facts[p.b].label], p.kind,
                    p.aligned] for p in conflicts[:limit]])
    else:
        doc.text("None: no duplicate pair carries two different labels.")

    if result.label_issues is not None:
        doc.heading("Suspected label errors")
        _label_issue_section(doc, result)

    near = sorted((p for p in pairs if p.kind == "near"), key=lambda p: p.aligned)
    if near:
        doc.heading("Near pairs closest to the threshold (check these by eye)")
        doc.table(["file a", "file b", "correlation", "aligned correlation", "phash distance"],
                  [[facts[p.a].key, facts[p.b].key, p.correlation, p.aligned, p.phash_distance]
                   for p in near[:min(limit, 10)]])

    doc.heading("Unreadable files")
    broken = [f for f in facts if not f.readable]
    if broken:
        doc.table(["file", "error"], [[f.key, f.error] for f in broken[:limit]])
    else:
        doc.text("None: every file decoded.")

    doc.heading("Image size and mode per split and class")
    doc.table(["split", "class", "files", "distinct sizes", "commonest size", "share", "median size",
               "width range", "height range", "modes", "median KiB"],
              [[r["split"], r["class"], r["files"], r.get("distinct_sizes", 0), r.get("common_size", "-"),
                r.get("common_share", "-"), r.get("median_size", "-"), _span(r.get("width_range")),
                _span(r.get("height_range")), ", ".join(f"{m} {n}" for m, n in r.get("modes", {}).items()),
                r.get("median_file_kb", "-")] for r in image_sizes(facts, classes, result.splits)])

    doc.heading("Shortcut check: the label from metadata alone")
    _shortcut_section(doc, result)
    if result.sources:
        doc.heading("Sources: can an image's source be told, and does its label depend on it?")
        source_section(doc, result.sources, result.cross_source or [], result.settings.max_listed)

    doc.heading("How duplicates were found")
    st = result.settings
    doc.text(f"Exact: equal sha256 of the file bytes. Near: a pair within {st.phash_max_distance} bits of phash or "
             f"{st.dhash_max_distance} bits of dhash, whose {st.thumb_size}x{st.thumb_size} grayscale thumbnails "
             f"correlate at >= {st.min_correlation} and still at >= {st.min_aligned_correlation} after aligning "
             "scale and shift (which keeps re-cropped and resized copies and rejects neighbouring slices of one "
             "scan). A byte-identical pair is listed as exact only.")
    doc.heading("Settings")
    doc.text(", ".join(f"{k}={v}" for k, v in asdict(result.settings).items()) +
             f". {summary['hash_candidates_checked']} hash candidate pairs were correlated pixel by pixel and "
             f"{summary['pairs_aligned']} of them aligned.")
    return doc


def implications(result: AuditResult, summary: dict[str, Any]) -> list[str]:
    """Plain-language consequences of the figures, most serious first."""
    out = []
    train, test = result.train_split, result.test_split
    if summary["test_leaked"]:
        out.append(f"{summary['test_leaked']} of {summary['test_files']} {test} images "
                   f"({summary['test_leaked_share']:.0%}) also appear, exactly or re-encoded, in {train}. Accuracy "
                   f"on the full {test} split partly measures memorisation: report it on the de-leaked subset "
                   f"(clean_split.json: test_deleaked, {summary['test_deleaked']} images) as well, or drop the "
                   "training copies (clean_split.json: drop).")
    else:
        out.append(f"No {test} image has a copy in {train}: the test split is not leaked.")
    in_train = summary["pairs_by_scope"].get(f"within {train}/exact", 0) + \
        summary["pairs_by_scope"].get(f"within {train}/near", 0)
    if in_train:
        out.append(f"{in_train} duplicate pairs lie inside {train}. A random validation split puts copies on both "
                   "sides, so validation scores come out optimistic; split by the duplicate groups in "
                   "clean_split.json (keep each group on one side) or drop the extra copies.")
    in_test = summary["pairs_by_scope"].get(f"within {test}/exact", 0) + \
        summary["pairs_by_scope"].get(f"within {test}/near", 0)
    if in_test:
        out.append(f"{in_test} duplicate pairs lie inside {test}: those pictures count several times in test "
                   "accuracy. Keep one file per group (clean_split.json: drop) for an unweighted score.")
    if summary["label_conflict_pairs"]:
        out.append(f"{summary['label_conflict_pairs']} pairs show the same image with different labels "
                   f"({summary['label_conflict_files']} files). At most one label of each is right: review them "
                   "before trusting per-class metrics, or leave them out of training and evaluation.")
    if summary["unreadable"]:
        out.append(f"{summary['unreadable']} file(s) could not be decoded (listed below): fix or remove them, or "
                   "train with data.on_error=skip.")
    found = result.label_issues
    if found is not None and not found.skipped and found.issues:
        out.append(f"{len(found.issues)} of {len(found.checked)} images look mislabelled to a classifier that never "
                   "saw them (label_issues.csv, most suspicious first). They are candidates, not verdicts: look at "
                   "them before relabelling or dropping any, starting from the top of the list.")
    shortcut = result.shortcut
    if "skipped" in shortcut:
        out.append(f"The shortcut check was skipped: {shortcut['skipped']}.")
    elif shortcut["shortcut"]:
        transfer, shift = shortcut.get("train_to_test"), ""
        if transfer and transfer["accuracy"] < shortcut["best_accuracy"] - result.settings.shortcut_margin:
            shift = (f" Fitted on {train} alone, the same metadata rule scores {transfer['accuracy']:.0%} on {test}: "
                     "the size mix differs between the splits, so expect a domain shift as well.")
        elif transfer:
            shift = (f" The rule carries over from {train} to {test} ({transfer['accuracy']:.0%}), so test accuracy "
                     "can reward it.")
        out.append(f"Image metadata alone (width, height, mode, file size) predicts the label with "
                   f"{shortcut['best_accuracy']:.0%} accuracy against {shortcut['baseline_accuracy']:.0%} for "
                   f"always guessing the largest class. A network that can see image size, aspect ratio or "
                   f"padding may learn that instead of anatomy: resize every image to one fixed size.{shift}")
    else:
        out.append(f"Metadata alone predicts the label no better than the majority baseline "
                   f"({shortcut['best_accuracy']:.0%} vs {shortcut['baseline_accuracy']:.0%}): no size shortcut.")
    counts = [n for n in class_balance(result.facts, result.classes, [train])[train].values() if n]
    if counts and max(counts) > 1.5 * min(counts):
        out.append(f"Classes in {train} are imbalanced ({min(counts)} to {max(counts)} files): read balanced "
                   "accuracy and per-class recall, not only accuracy.")
    return out


def _shortcut_section(doc: Document, result: AuditResult) -> None:
    shortcut = result.shortcut
    if "skipped" in shortcut:
        doc.text(f"Skipped: {shortcut['skipped']}.")
        return
    doc.text(f"Features: {', '.join(shortcut['features'])}; {shortcut['folds']}-fold stratified cross-validation "
             f"over {shortcut['files']} decoded files of both splits.")
    doc.table(["classifier", "accuracy", "balanced accuracy"],
              [[name, s["accuracy"], s["balanced_accuracy"]] for name, s in shortcut["models"].items()])
    verdict = "a shortcut: metadata carries label information" if shortcut["shortcut"] else "no shortcut found"
    doc.text(f"Best: {shortcut['best_model']} at {shortcut['best_accuracy']:.4f} vs the majority-class baseline "
             f"{shortcut['baseline_accuracy']:.4f} (lift {shortcut['lift']:+.4f}): {verdict}.")
    if "train_to_test" in shortcut:
        t = shortcut["train_to_test"]
        doc.text(f"Fitted on {result.train_split} and scored on {result.test_split}: accuracy {t['accuracy']:.4f}, "
                 f"balanced accuracy {t['balanced_accuracy']:.4f}.")


def _label_issue_section(doc: Document, result: AuditResult) -> None:
    found, facts, classes, st = result.label_issues, result.facts, result.classes, result.settings
    if found.skipped:
        doc.text(f"Skipped: {found.skipped}.")
        return
    doc.text(f"{len(found.issues)} of {len(found.checked)} decoded images are suspected of carrying a wrong label "
             f"(cleanlab's confident learning, filter_by={st.label_filter}). Each image's class probabilities come "
             f"from a logistic regression (C={st.label_c}) fitted on the other {found.folds - 1} of {found.folds} "
             f"folds, never on the image itself or a duplicate of it; features: {found.features} ({found.dims} "
             f"values per image). That classifier agrees with the given labels on {found.accuracy:.1%} of the "
             f"images; found in {found.seconds:.1f} s.")
    for note in found.notes:
        doc.text(note)
    counts = label_issue_counts(result)
    doc.table(["split", "class", "images judged", "flagged", "share"],
              [[split, name, c["checked"], c["flagged"], f"{c['flagged'] / c['checked']:.1%}" if c["checked"] else "-"]
               for split in result.splits for name, c in counts[split].items()])
    if not found.issues:
        return
    moves = Counter((classes[i.given], classes[i.suggested]) for i in found.issues)
    doc.text("Given label -> suggested label:")
    doc.table(["given", "suggested", "flagged"], [[a, b, n] for (a, b), n in sorted(moves.items())])
    shown = found.issues[:max(st.max_listed, st.label_thumbnails)]
    doc.text(f"The most suspicious{f' {len(shown)} of {len(found.issues)}' if len(shown) < len(found.issues) else ''} "
             "(score: the out-of-sample probability of the given label; every one is in label_issues.csv):")
    doc.table(["", "image", "given", "suggested", "score"],
              [[Picture(found.thumbnails[i.index], facts[i.index].key, st.label_thumb_size)
                if i.index in found.thumbnails else "", facts[i.index].key, classes[i.given], classes[i.suggested],
                i.score] for i in shown])


def _span(values: list[int] | None) -> str:
    return f"{values[0]}-{values[1]}" if values else "-"

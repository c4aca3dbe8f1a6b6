"""Suspected label errors: out-of-sample class probabilities from a cross-validated logistic regression on image
features, handed to cleanlab's confident learning (`cleanlab.filter.find_label_issues`).

Copies of one picture (the audit's duplicate groups) always fall into the same fold: otherwise a file's copy in
the training folds would hand its own label back to it, and a mislabelled file with a copy under the same wrong
label would never be flagged."""

from __future__ import annotations

import csv
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from medzoo.audit.features import checkpoint_features, thumbnail_features
from medzoo.audit.hashing import Fingerprints
from medzoo.audit.settings import AuditSettings
from medzoo.datasets.folder_scan import FileRecord
from medzoo.progress import progress

COLUMNS = ("path", "given_label", "suggested_label", "score")
THUMB_DIR = "label_issues"  # the report's thumbnails, next to report.md


@dataclass(frozen=True)
class LabelIssue:
    """One suspected label error; `index` points into the audit's file list."""

    index: int
    given: int
    suggested: int  # the most probable class other than the given one
    score: float  # out-of-sample probability of the given label (cleanlab's self-confidence): lower is worse


@dataclass
class LabelIssues:
    """What the label-error search found and how."""

    issues: list[LabelIssue]  # most suspicious first
    checked: list[int]  # indices of the files that were judged (decoded, in a class with enough files)
    features: str = ""
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    dims: int = 0
    folds: int = 0
    accuracy: float = 0.0  # out-of-sample accuracy of the classifier against the given labels
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None
    thumbnails: dict[int, str] = field(default_factory=dict)  # file index -> PNG path relative to the run dir


def search_label_issues(records: Sequence[FileRecord], prints: Fingerprints, groups: Sequence[Sequence[int]],
                        settings: AuditSettings, dataset: str, classes: Sequence[str]) -> LabelIssues:
    """Features of every decoded file, out-of-sample probabilities over `audit.label_folds` folds that keep
    each duplicate group together, and cleanlab's verdict."""
    started = time.perf_counter()
    readable = np.flatnonzero(prints.readable)
    if settings.label_features == "checkpoint":
        features = checkpoint_features([records[i] for i in readable], settings)
    else:
        features = thumbnail_features(prints.thumbs[readable], settings.label_features, settings.thumb_size)
    # A checkpoint's decoder can refuse a file the audit's thumbnailer read: its row is NaN.
    decoded = np.isfinite(features.values).all(axis=1) & (features.values.shape[1] > 0)
    index, values = readable[decoded], features.values[decoded]
    labels = np.array([prints.facts[i].label for i in index], dtype=np.int64)
    group_of = np.arange(len(prints.facts))
    for number, members in enumerate(groups):
        group_of[list(members)] = len(prints.facts) + number
    found = label_issues_from_features(values, labels, group_of[index], settings)
    found.checked = index[found.checked].tolist() if found.checked else []
    found.issues = [LabelIssue(int(index[issue.index]), issue.given, issue.suggested, issue.score)
                    for issue in found.issues]
    found.features, found.checkpoints, found.dims = features.source, features.checkpoints, int(values.shape[1])
    # The card names the data its checkpoint was trained on; the same name and classes mean these very labels.
    trained_here = [c["checkpoint"] for c in features.checkpoints
                    if c["trained_on"] == dataset and sorted(c["classes"]) == sorted(classes)]
    if trained_here:
        found.notes.append(
            f"The features come from {', '.join(trained_here)}, which was trained on this dataset's labels. A network "
            "remembers the labels it was trained on, so an image it learned under a wrong label looks like its given "
            "class and is missed: expect too few flags among the images it trained on, fair ones elsewhere. "
            "audit.label_features=hog gives a label-blind second opinion.")
    if not decoded.all():
        found.notes.append(f"{int((~decoded).sum())} file(s) that the checkpoint's decoder refused were left out.")
    found.seconds = time.perf_counter() - started
    return found


def label_issues_from_features(features: np.ndarray, labels: np.ndarray, groups: np.ndarray | None,
                               settings: AuditSettings) -> LabelIssues:
    """The search on ready-made features: indices in the result point into `features`."""
    present, counts = np.unique(labels, return_counts=True)
    kept_classes = present[counts >= 2]
    keep = np.isin(labels, kept_classes)
    notes = []
    if len(kept_classes) < len(present):
        notes.append(f"{int((~keep).sum())} file(s) of classes with fewer than 2 files were not judged.")
    if len(kept_classes) < 2:
        return LabelIssues([], [], notes=notes, skipped="needs two classes with at least two decoded files each")
    rows = np.flatnonzero(keep)
    # Classes renumbered 0..k-1 for cleanlab, which expects every column to be a class present in the labels.
    compact = np.searchsorted(kept_classes, labels[rows])
    groups = rows if groups is None else np.asarray(groups)[rows]
    probs, folds = out_of_sample_probabilities(features[rows], compact, groups, settings.label_folds,
                                               settings.label_seed, settings.label_c, settings.progress)
    flagged = confident_learning(compact, probs, settings.label_filter)
    given = probs[np.arange(len(compact)), compact]
    others = probs.copy()
    others[np.arange(len(compact)), compact] = -1.0
    suggested = others.argmax(1)
    order = sorted(np.flatnonzero(flagged).tolist(), key=lambda r: (given[r], r))
    issues = [LabelIssue(int(rows[r]), int(kept_classes[compact[r]]), int(kept_classes[suggested[r]]),
                         round(float(given[r]), 4)) for r in order]
    accuracy = float((probs.argmax(1) == compact).mean())
    return LabelIssues(issues, rows.tolist(), folds=folds, accuracy=round(accuracy, 4), notes=notes)


def out_of_sample_probabilities(features: np.ndarray, labels: np.ndarray, groups: np.ndarray, folds: int,
                                seed: int, c: float, shown: bool = False) -> tuple[np.ndarray, int]:
    """Class probabilities of every row from a standardised logistic regression fitted on the other folds only
    (stratified by label, whole groups per fold); returns them and the number of folds used. `shown`: progress
    fold by fold."""
    classes = int(labels.max()) + 1
    # A fold needs a member of each class; groups can hold several files, so count groups, not files.
    smallest = min(len(np.unique(groups[labels == k])) for k in range(classes))
    folds = max(2, min(folds, smallest))
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    probs = np.zeros((len(labels), classes))
    split = progress(splitter.split(features, labels, groups), folds, "audit label issues", "folds", shown)
    for fit, held in split:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000))
        model.fit(features[fit], labels[fit])
        # A class absent from the training folds gets probability 0 in the held-out fold.
        probs[np.ix_(held, model.classes_)] = model.predict_proba(features[held])
    return probs, folds


def confident_learning(labels: np.ndarray, probs: np.ndarray, filter_by: str) -> np.ndarray:
    """cleanlab's boolean mask of suspected label errors."""
    from cleanlab.filter import find_label_issues  # imported here: only audit.label_issues=true needs it

    return np.asarray(find_label_issues(labels, probs, filter_by=filter_by, n_jobs=1), dtype=bool)


def write_label_issues(path: Path, found: LabelIssues, keys: Sequence[str], classes: Sequence[str]) -> Path:
    """label_issues.csv: one row per suspected error, most suspicious first, paths as `split/class/file`."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for issue in found.issues:
            writer.writerow([keys[issue.index], classes[issue.given], classes[issue.suggested], f"{issue.score:.4f}"])
    return path


def write_thumbnails(run_dir: Path, found: LabelIssues, records: Sequence[FileRecord], count: int,
                     size: int) -> dict[int, str]:
    """PNG thumbnails of the `count` most suspicious files under run_dir/label_issues/; returns index -> path
    relative to run_dir (a file that fails to open again is left without one)."""
    folder = run_dir / THUMB_DIR
    written = {}
    for rank, issue in enumerate(found.issues[:count], start=1):
        folder.mkdir(exist_ok=True)
        target = folder / f"{rank:03d}.png"
        try:
            with Image.open(records[issue.index].path) as image:
                image.draft("L", (size, size))
                picture = image.convert("L" if image.mode in ("L", "I;16", "I", "F", "1") else "RGB")
                picture.thumbnail((size, size))
                if max(picture.size) < size:  # a 28 px MedMNIST image: enlarged with visible pixels
                    scale = size // max(picture.size)
                    picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
                picture.save(target)
        except (OSError, ValueError):
            continue
        written[issue.index] = f"{THUMB_DIR}/{target.name}"
    found.thumbnails = written
    return written

"""Label-error search in the audit (`audit.label_issues=true`): out-of-sample probabilities that never see the
image's own label, planted flips found and named, settings that name their key, and the measurement on a
PneumoniaMNIST folder with 10 % of its labels flipped."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from medzoo.audit.document import Document, Picture
from medzoo.audit.features import orientation_histograms, thumbnail_features
from medzoo.audit.label_issues import label_issues_from_features, out_of_sample_probabilities
from medzoo.audit.label_noise import score, write_noisy_folder
from medzoo.audit.settings import AuditSettings
from medzoo.errors import ConfigError
from tests.cli_runner import run_medzoo
from tests.conftest import SHARED_DATA

PNEUMONIA = SHARED_DATA / "medmnist" / "pneumoniamnist.npz"


def blobs(n: int = 300, classes: int = 3, flips: int = 30, seed: int = 0):
    """Well-separated Gaussian classes in 20 dimensions with `flips` labels moved to another class."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, classes, n)
    centres = rng.normal(0, 4, (classes, 20))
    features = centres[truth] + rng.normal(0, 1, (n, 20))
    flipped = rng.choice(n, flips, replace=False)
    given = truth.copy()
    given[flipped] = (truth[flipped] + rng.integers(1, classes, flips)) % classes
    return features, truth, given, set(flipped.tolist())


def test_planted_flips_are_found_and_given_their_true_class():
    features, truth, given, flipped = blobs()
    found = label_issues_from_features(features, given, None, AuditSettings(label_c=0.1))
    flagged = {issue.index for issue in found.issues}
    assert flagged == flipped
    # The suggestion is the class the image really belongs to, and the given label is the one in the data.
    assert all(issue.suggested == truth[issue.index] and issue.given == given[issue.index] for issue in found.issues)
    scores = [issue.score for issue in found.issues]
    assert scores == sorted(scores) and max(scores) < 0.5  # most suspicious first
    assert found.checked == list(range(len(given))) and found.folds == 5


def test_clean_labels_give_no_issues():
    """The verdict depends on the given labels: the same features with their true labels flag nothing."""
    features, truth, _, _ = blobs()
    assert label_issues_from_features(features, truth, None, AuditSettings(label_c=0.1)).issues == []


def test_probabilities_are_out_of_sample_and_copies_share_a_fold():
    """On features that carry no information, a model that saw the image's own label (or its copy's) would give
    that label a high probability; out of sample it stays at chance. Each image appears twice here, as its own
    exact copy: kept in one fold by the duplicate groups, the copy cannot hand the label back."""
    rng = np.random.default_rng(1)
    base = rng.normal(size=(150, 400))
    labels = np.tile(rng.integers(0, 2, 150), 2)
    features = np.concatenate([base, base])
    groups = np.tile(np.arange(150), 2)
    probs, folds = out_of_sample_probabilities(features, labels, groups, 5, 0, 1.0)
    own = probs[np.arange(len(labels)), labels]
    assert folds == 5 and np.allclose(probs.sum(1), 1.0)
    assert own.mean() < 0.6
    # The same without groups: each copy's twin sits in the training folds and the label leaks back.
    leaked, _ = out_of_sample_probabilities(features, labels, np.arange(len(labels)), 5, 0, 1.0)
    assert leaked[np.arange(len(labels)), labels].mean() > 0.8


def test_folds_shrink_to_the_smallest_class():
    features, _, given, _ = blobs(n=60, classes=2, flips=0)
    given[:3] = 2  # a third class of 3 images
    _, folds = out_of_sample_probabilities(features, given, np.arange(60), 5, 0, 1.0)
    assert folds == 3


def test_hog_features_follow_orientation():
    stripes = np.tile(np.sin(np.arange(64) / 2.0), (64, 1)).astype(np.float32)  # varies along x: vertical stripes
    vertical, horizontal = orientation_histograms(np.stack([stripes, stripes.T]), 8, 9).reshape(2, -1, 9).sum(1)
    assert vertical.argmax() == 0 and horizontal.argmax() == 4  # gradient along x (0 rad) vs along y (pi/2)
    thumbs = np.random.default_rng(0).normal(size=(3, 64 * 64)).astype(np.float32)
    assert thumbnail_features(thumbs, "hog", 64).values.shape == (3, 8 * 8 * 9)
    assert thumbnail_features(thumbs, "pixels", 64).values.shape == (3, 32 * 32)


@pytest.mark.parametrize(("values", "key"), [
    ({"label_folds": 1}, "audit.label_folds"),
    ({"label_folds": "five"}, "audit.label_folds"),
    ({"label_issues": "yes"}, "audit.label_issues"),
    ({"label_features": "sift"}, "audit.label_features"),
    ({"label_checkpoints": []}, "audit.label_checkpoints"),
    ({"label_checkpoints": [3]}, "audit.label_checkpoints"),
    ({"label_layers": []}, "audit.label_layers"),
    ({"label_c": 0}, "audit.label_c"),
    ({"label_filter": "argmax"}, "audit.label_filter"),
    ({"label_thumbnails": -1}, "audit.label_thumbnails"),
])
def test_bad_label_settings_name_the_key(values, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        AuditSettings.from_config(values)


def test_a_picture_renders_as_an_image_in_both_formats():
    doc = Document("t")
    doc.table(["", "file"], [[Picture("label_issues/001.png", "Training/a [1]|x.png", 96), "Training/a/x.png"]])
    assert "![Training/a (1)/x.png](<label_issues/001.png>)" in doc.markdown()
    assert '<img src="label_issues/001.png" alt="Training/a [1]|x.png" width="96">' in doc.html()


def medzoo(*args: str) -> None:
    result = run_medzoo(*args)
    if result.returncode != 0:
        raise AssertionError(f"medzoo {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")


def test_unknown_checkpoint_or_layer_is_a_config_error(tmp_path):
    if not PNEUMONIA.exists():
        pytest.skip(f"PneumoniaMNIST not found at {PNEUMONIA} (set MEDZOO_TEST_DATA to shared/data)")
    root = tmp_path / "data"
    write_noisy_folder(PNEUMONIA, root, limit=40)
    for override, key in (("audit.label_checkpoints=[no_such_model]", "audit.label_checkpoints"),
                          ("audit.label_layers=[layer9]", "audit.label_layers")):
        result = run_medzoo("audit", "data=brain_tumor", f"data.root={root}", "audit.label_issues=true", override,
                            f"hydra.run.dir={tmp_path / 'run'}")
        assert result.returncode != 0 and key in result.stderr, result.stderr[-2000:]
        assert "audit hashing" not in result.stdout + result.stderr  # refused before the data is read


# Measured on 1,000 PneumoniaMNIST images (a seeded random subset of all three splits, 10 % of labels flipped,
# seed 0) with the defaults of conf/audit.yaml: precision 0.669, recall 0.810 (see docs/audit.md, where the
# full-size figures are). The bounds leave a margin for BLAS and libjpeg differences between machines.
SMALL_SET = {"limit": 1000, "fraction": 0.1, "seed": 0}
SMALL_SET_BOUNDS = {"precision": 0.60, "recall": 0.75}


def test_flipped_pneumoniamnist_labels_are_found(tmp_path):
    if not PNEUMONIA.exists():
        pytest.skip(f"PneumoniaMNIST not found at {PNEUMONIA} (set MEDZOO_TEST_DATA to shared/data)")
    root, run = tmp_path / "data", tmp_path / "run"
    flipped = write_noisy_folder(PNEUMONIA, root, classes=("normal", "pneumonia"), **SMALL_SET)
    assert len(flipped) == 100 and all((root / key).is_file() for key in flipped)
    medzoo("audit", "data=brain_tumor", "data.name=pneumoniamnist_flipped", f"data.root={root}",
           "audit.label_issues=true", f"hydra.run.dir={run}")
    with open(run / "label_issues.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == ["path", "given_label", "suggested_label", "score"]
        rows = list(reader)
    for row in rows:
        split, label, _ = row["path"].split("/")
        assert split in ("Training", "Testing") and (root / row["path"]).is_file()
        assert row["given_label"] == label
        assert row["suggested_label"] in ("normal", "pneumonia") and row["suggested_label"] != label
        assert 0.0 <= float(row["score"]) <= 1.0
    measured = score(run / "label_issues.csv", flipped)
    assert measured["precision"] >= SMALL_SET_BOUNDS["precision"], measured
    assert measured["recall"] >= SMALL_SET_BOUNDS["recall"], measured

    summary = json.loads((run / "summary.json").read_text())["label_issues"]
    per_class = summary["per_split_class"]
    assert summary["flagged"] == len(rows) and summary["checked"] == 1000
    assert sum(c["flagged"] for split in per_class.values() for c in split.values()) == len(rows)
    assert not summary["notes"]  # the brain-tumour checkpoint never saw these images
    report = (run / "report.md").read_text()
    assert "## Suspected label errors" in report
    thumbs = sorted((run / "label_issues").glob("*.png"))
    assert len(thumbs) == min(24, len(rows))
    assert f"](<label_issues/{thumbs[0].name}>)" in report and rows[0]["path"] in report


def test_search_warns_about_a_checkpoint_trained_on_these_labels_and_drops_undecoded_rows(monkeypatch):
    """search_label_issues maps rows back to the audit's files, leaves out a file the checkpoint's decoder refused
    (a NaN row) and says when the features come from a model trained on this very dataset."""
    import medzoo.audit.label_issues as module
    from medzoo.audit.features import Features
    from medzoo.audit.hashing import Fingerprints, ImageFacts
    from medzoo.datasets.folder_scan import FileRecord

    features, truth, given, flipped = blobs(n=120, classes=2, flips=12)
    values = features.astype(np.float32)
    values[7] = np.nan
    facts = [ImageFacts(f"Training/c{y}/{i}.png", "Training", int(y), 100, "x", 8, 8, "L") for i, y in enumerate(given)]
    prints = Fingerprints(facts, np.zeros((120, 64 * 64), np.float32), np.zeros((120, 1), np.uint64),
                          np.zeros((120, 1), np.uint64))
    records = [FileRecord(Path(f.key), f.label, f.key) for f in facts]
    seen = {"checkpoint": "mine", "trained_on": "tumours", "classes": ["c1", "c0"]}
    monkeypatch.setattr(module, "checkpoint_features", lambda recs, st: Features(values[:len(recs)], "checkpoint mine", [seen]))
    found = module.search_label_issues(records, prints, [], AuditSettings(label_c=0.1), "tumours", ["c0", "c1"])
    assert 7 not in found.checked and len(found.checked) == 119
    flagged = {i.index for i in found.issues}  # indices of the audit's files, not of the decoded rows
    assert flagged <= flipped - {7} and len(flagged) >= len(flipped - {7}) - 1
    assert any("trained on this dataset's labels" in note for note in found.notes)
    assert any("1 file(s)" in note for note in found.notes)
    other = module.search_label_issues(records, prints, [], AuditSettings(label_c=0.1), "another_set", ["c0", "c1"])
    assert not any("trained on" in note for note in other.notes)

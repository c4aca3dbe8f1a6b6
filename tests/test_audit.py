"""Dataset audit: duplicates, leaks, label conflicts, unreadable files, the clean-split manifest, the shortcut
check, and the `medzoo audit` command on a planted synthetic folder and on the real brain-tumour set."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from medzoo.audit.align import aligned_correlation
from medzoo.audit.duplicates import candidate_pairs, connected_groups, exact_pairs
from medzoo.audit.hashing import ImageFacts, fingerprint_file
from medzoo.audit.settings import AuditSettings
from medzoo.audit.shortcut import shortcut_check
from medzoo.datasets.folder_scan import FileRecord
from medzoo.errors import ConfigError
from tests.cli_runner import run_medzoo

CLASSES = ("alpha", "beta")
SIZES = {"alpha": (64, 64), "beta": (96, 72)}  # a planted size shortcut: the class decides the image size


def smooth_image(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A distinct grayscale picture: random low-frequency blobs plus a little detail, stored as RGB."""
    coarse = Image.fromarray(rng.integers(0, 256, (6, 6), dtype=np.uint8)).resize(size, Image.Resampling.BICUBIC)
    detail = rng.normal(0, 6, (size[1], size[0]))
    gray = np.clip(np.asarray(coarse, np.float64) + detail, 0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([gray] * 3, -1))


NEAR_MISS = ("slice 30.jpg", "slice 31.jpg")  # in Training/alpha


def neighbouring_slices() -> tuple[np.ndarray, np.ndarray]:
    """Slices 30 and 31 of a smooth 64 x 64 x 128 volume with independent noise per voxel: the same anatomy,
    moved a little, so their thumbnails correlate at ~0.98 before and after alignment (measured 0.978 / 0.979),
    below the 0.99 that a re-encoded or re-framed copy reaches."""
    rng = np.random.default_rng(0)
    volume = ndimage.zoom(rng.uniform(0, 255, (6, 6, 12)), (64 / 6, 64 / 6, 128 / 12), order=3)
    volume += rng.normal(0, 4, volume.shape)
    return tuple(np.clip(volume[:, :, z], 0, 255).astype(np.uint8) for z in (30, 31))


def reencode(source: Path, target: Path, scale: float = 1.0, quality: int = 75) -> None:
    with Image.open(source) as image:
        size = (round(image.width * scale), round(image.height * scale))
        image.resize(size, Image.Resampling.BILINEAR).save(target, quality=quality)


def planted_folder(root: Path) -> dict[str, set]:
    """A two-class folder with known duplicates; returns the expected pairs.csv rows and manifest lists."""
    rng = np.random.default_rng(7)
    for split, count in (("Training", 8), ("Testing", 3)):
        for name in CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                smooth_image(rng, SIZES[name]).save(folder / f"{name[0]} ({i}).jpg", quality=90)
    train_a, train_b = root / "Training" / "alpha", root / "Training" / "beta"
    test_a, test_b = root / "Testing" / "alpha", root / "Testing" / "beta"
    # A group of three byte-identical files, two in Training and one in Testing.
    shutil.copy(train_a / "a (0).jpg", train_a / "a (0) copy.jpg")
    shutil.copy(train_a / "a (0).jpg", test_a / "leak.jpg")
    # A resized, re-encoded copy across the splits, same label.
    reencode(train_b / "b (1).jpg", test_b / "b (1) small.jpg", scale=0.75, quality=70)
    # The same picture under another label: re-encoded within Training, byte-identical across splits.
    reencode(train_a / "a (2).jpg", train_b / "relabelled.jpg", quality=60)
    shutil.copy(train_a / "a (3).jpg", test_b / "relabelled leak.jpg")
    # Unreadable: not an image at all, and a JPEG cut in half.
    (train_a / "garbage.jpg").write_bytes(b"this is not a JPEG file")
    data = (train_b / "b (4).jpg").read_bytes()
    (train_b / "truncated.jpg").write_bytes(data[: len(data) // 2])
    # A hard negative: an image made of one training image's blobs plus equally strong unrelated detail.
    with Image.open(train_a / "a (5).jpg") as image:
        base = np.asarray(image.convert("L"), np.float64)
    other = np.asarray(smooth_image(rng, SIZES["alpha"]).convert("L"), np.float64)
    Image.fromarray(np.clip(0.5 * base + 0.5 * other, 0, 255).astype(np.uint8)).save(test_a / "mixed.jpg")
    # A near miss: two neighbouring slices of one volume. Unlike "mixed.jpg" it passes the hash screen and the
    # correlation screen, so only min_aligned_correlation keeps it out (test_the_near_miss_reaches_the_threshold).
    for name, pixels in zip(NEAR_MISS, neighbouring_slices()):
        Image.fromarray(np.stack([pixels] * 3, -1)).save(train_a / name, quality=90)

    def row(a: str, b: str, kind: str, conflict: bool) -> tuple[str, str, str, str]:
        return (*sorted((a, b)), kind, str(conflict).lower())

    pairs = {row("Training/alpha/a (0).jpg", "Training/alpha/a (0) copy.jpg", "exact", False),
             row("Training/alpha/a (0).jpg", "Testing/alpha/leak.jpg", "exact", False),
             row("Training/alpha/a (0) copy.jpg", "Testing/alpha/leak.jpg", "exact", False),
             row("Training/beta/b (1).jpg", "Testing/beta/b (1) small.jpg", "near", False),
             row("Training/alpha/a (2).jpg", "Training/beta/relabelled.jpg", "near", True),
             row("Training/alpha/a (3).jpg", "Testing/beta/relabelled leak.jpg", "exact", True)}
    tests = {p.relative_to(root).as_posix() for p in root.glob("Testing/*/*.jpg")}
    leaked = {"Testing/alpha/leak.jpg", "Testing/beta/b (1) small.jpg", "Testing/beta/relabelled leak.jpg"}
    return {"pairs": pairs, "deleaked": tests - leaked, "leaked": leaked,
            "unreadable": {"Training/alpha/garbage.jpg", "Training/beta/truncated.jpg"}}


def medzoo(*args: str) -> subprocess.CompletedProcess:
    result = run_medzoo(*args)
    if result.returncode != 0:
        raise AssertionError(f"medzoo {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, dict]:
    """The planted folder audited once through the real `medzoo audit` entry point."""
    root = tmp_path_factory.mktemp("audit-data") / "planted"
    expected = planted_folder(root)
    run = root.parent / "run"
    medzoo("audit", "data=brain_tumor", f"data.root={root}", "audit.workers=2", f"hydra.run.dir={run}")
    return run, expected


def read_pairs(run: Path) -> list[dict[str, str]]:
    with open(run / "pairs.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == ["path_a", "path_b", "kind", "label_conflict"]
        return list(reader)


def test_pairs_csv_lists_exactly_the_planted_pairs(planted):
    run, expected = planted
    rows = read_pairs(run)
    found = [(r["path_a"], r["path_b"], r["kind"], r["label_conflict"]) for r in rows]
    assert len(found) == len(set(found))
    assert set(found) == expected["pairs"]
    assert all(a < b for a, b, _, _ in found)


def test_manifest_groups_drop_and_deleaked_test(planted):
    run, expected = planted
    manifest = json.loads((run / "clean_split.json").read_text())
    assert set(manifest["test_deleaked"]) == expected["deleaked"]
    assert set(manifest["test_leaked"]) == expected["leaked"]
    assert set(manifest["unreadable"]) == expected["unreadable"]
    groups = {tuple(g["members"]): g for g in manifest["groups"]}
    assert len(groups) == 4
    trio = groups[("Testing/alpha/leak.jpg", "Training/alpha/a (0) copy.jpg", "Training/alpha/a (0).jpg")]
    # The test copy is kept; both training copies go.
    assert trio["representative"] == "Testing/alpha/leak.jpg" and not trio["label_conflict"]
    assert {"Training/alpha/a (0).jpg", "Training/alpha/a (0) copy.jpg"} <= set(manifest["drop"])
    assert not any(key.startswith("Testing/") for key in manifest["drop"])
    assert len(manifest["drop"]) == sum(len(g["members"]) - 1 for g in manifest["groups"])
    assert sum(g["label_conflict"] for g in manifest["groups"]) == 2
    assert set(manifest["label_conflict_files"]) == {
        "Training/alpha/a (2).jpg", "Training/beta/relabelled.jpg",
        "Training/alpha/a (3).jpg", "Testing/beta/relabelled leak.jpg"}


def test_summary_and_reports(planted):
    run, _ = planted
    summary = json.loads((run / "summary.json").read_text())
    assert summary["files"] == 32 and summary["unreadable"] == 2
    assert (summary["exact_pairs"], summary["near_pairs"], summary["cross_split_pairs"]) == (4, 2, 4)
    assert summary["label_conflict_pairs"] == 2 and summary["test_leaked"] == 3
    assert summary["shortcut"]["shortcut"] is True  # the planted size shortcut
    assert summary["shortcut"]["best_accuracy"] >= summary["shortcut"]["baseline_accuracy"] + 0.25
    report = (run / "report.md").read_text()
    for words in ("What this means for evaluation", "Class balance", "Label conflicts", "Unreadable files",
                  "Shortcut check", "Training/alpha/garbage.jpg", "majority class"):
        assert words in report, words
    page = (run / "report.html").read_text()
    assert page.startswith("<!doctype html>") and "<table>" in page and "relabelled leak.jpg" in page


def test_the_near_miss_reaches_the_deciding_threshold(planted):
    """The planted neighbouring slices are a real test of min_aligned_correlation: both hashes and the plain
    correlation let them through to the alignment, where they score between 0.95 and 0.985."""
    run, _ = planted
    settings = AuditSettings(**json.loads((run / "summary.json").read_text())["settings"])  # as the run used
    a, b = (fingerprint_file(FileRecord(run.parent / "planted" / "Training" / "alpha" / name, 0,
                                        f"Training/alpha/{name}"), settings) for name in NEAR_MISS)
    assert int(np.bitwise_count(a.phash ^ b.phash).sum()) <= settings.phash_max_distance
    assert int(np.bitwise_count(a.dhash ^ b.dhash).sum()) <= settings.dhash_max_distance
    assert float(a.thumb @ b.thumb) >= settings.min_correlation + 0.01
    side = settings.thumb_size
    assert 0.95 <= aligned_correlation(a.thumb.reshape(side, side), b.thumb.reshape(side, side)) <= 0.985
    listed = {(r["path_a"], r["path_b"]) for r in read_pairs(run)}
    assert tuple(f"Training/alpha/{name}" for name in NEAR_MISS) not in listed


def test_shortcut_check_sees_a_size_shortcut_and_not_random_sizes():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 120)

    def facts(sizes):
        return [ImageFacts(f"Training/c{y}/{i}.jpg", "Training", int(y), int(rng.integers(9000, 11000)), "x",
                           width=int(w), height=int(h), mode="RGB") for i, (y, (w, h)) in enumerate(zip(labels, sizes))]

    settings = AuditSettings(cv_folds=4)
    planted = shortcut_check(facts([(200 + 100 * y, 200 + 100 * y) for y in labels]), "Training", "Testing",
                             settings)
    assert planted["shortcut"] and planted["best_accuracy"] > 0.95
    random_sizes = shortcut_check(facts(rng.integers(200, 600, (120, 2))), "Training", "Testing", settings)
    assert not random_sizes["shortcut"]
    assert random_sizes["best_accuracy"] < random_sizes["baseline_accuracy"] + 0.10


def test_alignment_tells_a_reframed_copy_from_a_changed_picture():
    picture = np.asarray(smooth_image(np.random.default_rng(3), (96, 96)).convert("L"), np.float64)
    yy, xx = np.mgrid[:96, :96]
    changed = picture + 60.0 * ((yy - 40) ** 2 + (xx - 55) ** 2 < 12 ** 2)  # a lesion grows: another slice

    def thumb(image: np.ndarray) -> np.ndarray:
        image = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
        return np.asarray(image.resize((64, 64), Image.Resampling.BILINEAR), np.float64)

    def pearson(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])

    original, recropped, other = thumb(picture), thumb(picture[2:-1, 1:-3]), thumb(changed)
    # Plain correlation cannot tell the two apart; after alignment the copy is near 1, the change is not.
    assert abs(pearson(original, recropped) - pearson(original, other)) < 0.01
    assert aligned_correlation(original, recropped) > 0.999
    assert aligned_correlation(original, other) < 0.985


def test_duplicate_building_blocks():
    assert exact_pairs(["x", "y", "x", None, "x", None]) == {(0, 2), (0, 4), (2, 4)}
    assert connected_groups(6, [(0, 2), (2, 4), (1, 5)]) == [[0, 2, 4], [1, 5]]
    hashes = np.array([[0b0], [0b111], [0b1], [2 ** 63]], dtype=np.uint64)
    readable = np.array([True, True, True, False])
    found = candidate_pairs(hashes, hashes, readable, 1, 1)
    assert sorted(map(tuple, found.tolist())) == [(0, 2)]  # the unreadable row 3 is never a candidate


def test_bad_settings_name_the_key():
    with pytest.raises(ConfigError, match="audit.min_correlation"):
        AuditSettings.from_config({"min_correlation": 1.5})
    with pytest.raises(ConfigError, match="unknown audit setting"):
        AuditSettings.from_config({"min_corelation": 0.9})


# The audit's defaults (conf/audit.yaml) that decide which pairs are duplicates, and what they find in the
# real brain-tumour set (3,264 JPEGs), measured with Pillow 13.0.
REAL_SET_THRESHOLDS = {"draft_size": 256, "thumb_size": 64, "hash_size": 8, "phash_max_distance": 12,
                       "dhash_max_distance": 12, "min_correlation": 0.95, "min_aligned_correlation": 0.99}
REAL_SET_COUNTS = {"exact_pairs": 371, "near_pairs": 464, "cross_split_exact_pairs": 143,
                   "cross_split_near_pairs": 286, "label_conflict_pairs": 8, "pairs_aligned": 849, "groups": 279,
                   "drop": 453, "test_leaked": 260}


def test_real_brain_tumour_set(brain_tumor_root, tmp_path):
    run = tmp_path / "run"
    medzoo("audit", "data=brain_tumor", f"data.root={brain_tumor_root}", f"hydra.run.dir={run}")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["files"] == 3264 and summary["unreadable"] == 0
    rows = read_pairs(run)
    exact = {(r["path_a"], r["path_b"]) for r in rows if r["kind"] == "exact"}
    # Every byte-identical pair, recomputed here from the shipped SHA256SUMS.
    by_digest: dict[str, list[str]] = {}
    for line in (brain_tumor_root / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        by_digest.setdefault(digest, []).append(name.lstrip("*").removeprefix("./"))
    expected = {tuple(sorted((a, b))) for names in by_digest.values() for i, a in enumerate(names)
                for b in names[i + 1:]}
    assert exact == expected and exact
    # Pinned: any change to the thresholds or to what passes them changes these counts, and must be deliberate
    # (update both dicts and say why; a Pillow/libjpeg upgrade can move a pair near a threshold, too).
    # Lowering min_aligned_correlation to 0.5 lists 849 near pairs (every aligned candidate) instead of 464.
    settings = {key: summary["settings"][key] for key in REAL_SET_THRESHOLDS}
    counts = {key: summary[key] for key in REAL_SET_COUNTS}
    assert (settings, counts) == (REAL_SET_THRESHOLDS, REAL_SET_COUNTS)
    near = sum(r["kind"] == "near" for r in rows)
    near_cross = sum(r["kind"] == "near" and r["path_a"].split("/")[0] != r["path_b"].split("/")[0] for r in rows)
    assert (len(exact), near, near_cross) == (371, 464, 286)  # pairs.csv says the same as summary.json
    assert summary["shortcut"]["shortcut"] is True


def test_a_data_config_that_brings_a_training_protocol_ends_in_one_line_not_a_hydra_error(tmp_path):
    """data=medmnist overrides the transforms/optim/sched/trainer groups; the audit loads it and says what it reads."""
    result = run_medzoo("audit", "data=medmnist", "data.path=builtin:breastmnist", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        "medzoo audit: error: data=MedMNISTSource is not an image-folder dataset; medzoo audit reads "
        "Training/<class>/* and Testing/<class>/* folders (e.g. data=brain_tumor)."]

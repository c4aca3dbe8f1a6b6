"""Several sources in one DataSplits (issue 20): class maps, group-aware validation, per-source splits, balance."""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medzoo.audit.duplicates import find_duplicates
from medzoo.audit.hashing import ImageFacts, fingerprint_records
from medzoo.audit.manifest import clean_split
from medzoo.audit.settings import AuditSettings
from medzoo.audit.sources import cramers_v, cross_source_pairs, source_shortcut_check
from medzoo.datasets.arrays import SplitArrays
from medzoo.datasets.dataset import DataSplits
from medzoo.datasets.image_folder import ImageFolderSource
from medzoo.datasets.multisource import MultiSourceData, SlicesCsvSource, source_of
from medzoo.datasets.splits import stratified_split
from medzoo.engine.metrics import classification_metrics
from medzoo.errors import ConfigError, DataError
from medzoo.loading.loader import make_loader
from medzoo.loading.samplers import BalancedSampler

VOCAB = ["glioma", "meningioma", "notumor", "pituitary"]
FOLDER_MAP = {"glioma_tumor": "glioma", "meningioma_tumor": "meningioma", "no_tumor": "notumor",
              "pituitary_tumor": "pituitary"}


def _png(path: Path, rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(path)


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    """A 4-class image-folder source (Training/Testing) and a 2-class slice source with 12 patients."""
    rng = np.random.default_rng(0)
    folders = tmp_path / "bt"
    for split, count in (("Training", 10), ("Testing", 3)):
        for name in FOLDER_MAP:
            for i in range(count):
                _png(folders / split / name / f"{name[0]} ({i}).jpg".replace(".jpg", ".png"), rng)
    slices = tmp_path / "lgg"
    rows = []
    for p in range(12):
        patient = f"TCGA_XX_{p:04d}"
        for s in range(8):  # 8 slices per patient, both classes: a slice split would straddle patients
            cls = "glioma_tumor" if s % 2 else "no_tumor"
            for seq in ("flair", "t1c"):
                rel = f"{seq}/{cls}/{patient}_{s}.png"
                _png(slices / rel, rng)
                rows.append({"file": rel, "sequence": seq, "class": cls, "patient": patient, "slice_index": s,
                             "institution": "XX"})
    with (slices / "slices.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folders, slices


def _data(roots, **kw) -> MultiSourceData:
    folders, slices = roots
    sources = {"brain_tumor": ImageFolderSource("brain_tumor", root=str(folders), class_map=FOLDER_MAP,
                                                cache="memory"),
               "tcga_lgg": SlicesCsvSource(root=str(slices), class_map={"glioma_tumor": "glioma",
                                                                        "no_tumor": "notumor"},
                                           sequences=["flair", "t1c"], test_fraction=0.25)}
    return MultiSourceData("ms", sources, VOCAB, cache="memory", **{"val_fraction": 0.25, **kw})


def _load(data: MultiSourceData) -> DataSplits:
    return data.load(lambda pixels: pixels, "identity")


def _patient(key: str) -> str:
    return Path(key).stem.rsplit("_", 1)[0]


def test_class_maps_put_every_source_on_one_vocabulary(roots):
    splits = _load(_data(roots))
    assert splits.classes == VOCAB
    everything = [splits.train, splits.val, splits.test, splits.extra_tests["test_tcga_lgg"]]
    by_source = Counter((source_of(k), VOCAB[label]) for s in everything for k, label in zip(s.keys, s.labels))
    assert {c for s, c in by_source if s == "tcga_lgg"} == {"glioma", "notumor"}  # only what it has
    assert {c for s, c in by_source if s == "brain_tumor"} == set(VOCAB)
    # a TCGA glioma_tumor file is labelled glioma, a no_tumor file notumor
    for split in everything:
        for key, label in zip(split.keys, split.labels):
            folder = key.split(":", 1)[1].split("/")[1]
            assert VOCAB[label] == {**FOLDER_MAP}[folder]
    # the official Testing split stays the test split, whole
    assert {source_of(k) for k in splits.test.keys} == {"brain_tumor"} and len(splits.test.keys) == 12
    assert all(k.startswith("brain_tumor:Testing/") for k in splits.test.keys)


def test_unmapped_class_names_the_setting(roots):
    folders, _ = roots
    data = MultiSourceData("ms", {"bt": ImageFolderSource("bt", root=str(folders), cache="memory")}, VOCAB,
                           cache="memory")
    with pytest.raises(ConfigError, match="data.sources.bt.class_map"):
        _load(data)


def test_validation_and_test_keep_each_patient_on_one_side(roots):
    splits = _load(_data(roots))
    tcga = lambda s: {_patient(k) for k in s.keys if source_of(k) == "tcga_lgg"}  # noqa: E731
    train, val, test = tcga(splits.train), tcga(splits.val), tcga(splits.extra_tests["test_tcga_lgg"])
    assert val and test and train
    assert not (train & val) and not (train & test) and not (val & test)
    assert len(train | val | test) == 12


def test_a_split_that_ignores_patients_would_straddle_them(roots):
    """The check above can fail: a plain slice-level split of the same pool puts patients on both sides."""
    splits = _load(_data(roots))
    pool = SplitArrays(np.concatenate([splits.train.images, splits.val.images]),
                       np.concatenate([splits.train.labels, splits.val.labels]), splits.train.keys + splits.val.keys)
    train, val = stratified_split(pool, 0.25, 0)
    patients = lambda s: {_patient(k) for k in s.keys if source_of(k) == "tcga_lgg"}  # noqa: E731
    assert patients(train) & patients(val)


def test_per_source_splits_partition_validation_and_give_per_class_metrics(roots):
    splits = _load(_data(roots))
    val_bt, val_lgg = splits.extra_tests["val_brain_tumor"], splits.extra_tests["val_tcga_lgg"]
    assert sorted(val_bt.keys + val_lgg.keys) == sorted(splits.val.keys)
    assert {source_of(k) for k in val_bt.keys} == {"brain_tumor"}
    assert {source_of(k) for k in val_lgg.keys} == {"tcga_lgg"}
    # a model right on brain_tumor and always "glioma" on tcga: the per-source figures tell them apart
    probs = np.eye(4)[splits.val.labels]
    probs[[i for i, k in enumerate(splits.val.keys) if source_of(k) == "tcga_lgg"]] = np.eye(4)[0]
    lookup = dict(zip(splits.val.keys, probs))
    on = lambda s: classification_metrics(np.stack([lookup[k] for k in s.keys]), s.labels, VOCAB)  # noqa: E731
    assert on(val_bt)["accuracy"] == 1.0
    lgg = on(val_lgg)
    assert lgg["per_class"]["notumor"]["recall"] == 0.0 and lgg["per_class"]["glioma"]["recall"] == 1.0
    counts = splits.report["counts"]["val"]
    assert counts["tcga_lgg"]["meningioma"] == 0 and sum(counts["tcga_lgg"].values()) == len(val_lgg.keys)


def test_balanced_sampling_draws_each_source_class_cell_equally(roots):
    splits = _load(_data(roots, balance="source_class"))
    strata = splits.train_strata
    assert strata is not None and len(np.unique(strata)) == 6  # 4 brain_tumor cells + 2 tcga cells
    assert max(Counter(strata.tolist()).values()) > 1.5 * min(Counter(strata.tolist()).values())  # imbalanced
    sampler = BalancedSampler(strata, seed=0)
    drawn = Counter()
    for epoch in range(200):
        sampler.set_epoch(epoch)
        drawn.update(strata[i] for i in sampler.indices())
    freq = np.array([drawn[s] for s in np.unique(strata)]) / sum(drawn.values())
    assert np.allclose(freq, 1 / 6, atol=0.01), freq
    sampler.set_epoch(3)
    first = sampler.indices()
    sampler.set_epoch(3)
    assert sampler.indices() == first and len(first) == len(strata)


def test_class_source_balance_draws_classes_equally_then_sources_within_a_class(roots):
    """class_source: each class 1/4; glioma and notumor (in both sources) split theirs evenly between sources, so
    a TCGA glioma is drawn at 1/8 where source_class would give it 1/6."""
    splits = _load(_data(roots, balance="class_source"))
    strata = splits.train_strata
    assert strata.shape == (len(splits.train.keys), 2)
    assert np.array_equal(strata[:, 0], splits.train.labels)
    sampler = BalancedSampler(strata, seed=0)
    drawn = Counter()
    for epoch in range(200):
        sampler.set_epoch(epoch)
        drawn.update((VOCAB[strata[i, 0]], source_of(splits.train.keys[i])) for i in sampler.indices())
    total = sum(drawn.values())
    freq = {cell: n / total for cell, n in drawn.items()}
    assert set(freq) == {("glioma", "brain_tumor"), ("glioma", "tcga_lgg"), ("notumor", "brain_tumor"),
                         ("notumor", "tcga_lgg"), ("meningioma", "brain_tumor"), ("pituitary", "brain_tumor")}
    for cell, share in freq.items():
        expected = 1 / 8 if cell[0] in ("glioma", "notumor") else 1 / 4
        assert abs(share - expected) < 0.01, (cell, share)


def test_loader_uses_the_balanced_sampler_only_when_asked(roots):
    from medzoo.datasets.dataset import ArrayDataset
    splits = _load(_data(roots, balance="source_class"))
    dataset = ArrayDataset(splits.train, None)
    loader = make_loader(dataset, 8, shuffle=True, seed=0, num_workers=0, strata=splits.train_strata)
    assert isinstance(loader.sampler, BalancedSampler)
    assert not isinstance(make_loader(dataset, 8, shuffle=True, seed=0, num_workers=0).sampler, BalancedSampler)
    assert _load(_data(roots)).train_strata is None


def test_unknown_balance_is_a_config_error(roots):
    with pytest.raises(ConfigError, match="data.balance"):
        _data(roots, balance="class")


def test_sources_build_from_plain_settings_as_in_the_data_config(roots):
    """conf/data/brain_tumor_multisource.yaml gives sources as plain values (`kind`), which the card can carry."""
    folders, slices = roots
    data = MultiSourceData("ms", {
        "brain_tumor": {"kind": "image_folder", "root": str(folders), "class_map": FOLDER_MAP, "cache": "memory"},
        "tcga_lgg": {"kind": "slices_csv", "root": str(slices), "test_fraction": 0.25,
                     "class_map": {"glioma_tumor": "glioma", "no_tumor": "notumor"}}}, VOCAB, cache="memory")
    assert isinstance(data.sources["brain_tumor"], ImageFolderSource)
    assert isinstance(data.sources["tcga_lgg"], SlicesCsvSource)
    assert set(_load(data).extra_tests) == {"test_tcga_lgg", "val_brain_tumor", "val_tcga_lgg"}
    with pytest.raises(ConfigError, match="data.sources.x.kind"):
        MultiSourceData("ms", {"x": {"kind": "nifti"}}, VOCAB)


def test_a_source_of_no_registered_kind_is_refused_before_any_work(roots):
    with pytest.raises(ConfigError, match=r"data.sources.odd: object is not a multi-source kind "
                                          r"\(ImageFolderSource, SlicesCsvSource\)"):
        MultiSourceData("ms", {"odd": object()}, VOCAB)  # neither plain settings nor a registered kind's object
    with pytest.raises(ConfigError, match=r"kind=None: use image_folder or slices_csv"):
        MultiSourceData("ms", {"x": {"root": "somewhere"}}, VOCAB)


class _ListedSource:
    """A toy kind for the test below: files listed in code, each its own patient's, a fixed test list."""

    def __init__(self, root: str, train: list[tuple[str, str]], test: list[tuple[str, str]]):
        self.root, self.train, self.test = Path(root), train, test


def test_a_new_source_kind_is_one_entry_of_the_registry(roots, tmp_path, monkeypatch):
    """The extension point: registering a kind makes it usable from plain settings, with its own test split,
    per-source validation and its groups kept on one side, with no other change."""
    from medzoo.datasets import multisource
    from medzoo.datasets.folder_scan import FileRecord

    rng = np.random.default_rng(1)
    listed = tmp_path / "listed"
    files = [(f"p{i}/a.png", "glioma" if i % 2 else "notumor") for i in range(12)]
    for rel, _ in files:
        _png(listed / rel, rng)

    def records(data, name, src, rows):
        index = data.class_indices(name, sorted({c for _, c in rows}))
        by_class = dict(zip(sorted({c for _, c in rows}), index))
        return [FileRecord(src.root / rel, by_class[c], f"{name}:{rel}") for rel, c in rows]

    def files_of(data, name, src):
        return records(data, name, src, src.train), records(data, name, src, src.test)

    def parts(data, name, src):
        train, test = files_of(data, name, src)
        return train, test, {r.key: f"{name}:patient:{r.key.split(':')[1].split('/')[0]}" for r in train}, None

    kind = multisource.SourceKind(_ListedSource, lambda name, settings, cache_dir, clean: _ListedSource(**settings),
                                  files=files_of, parts=parts, root=lambda src: src.root, patients_known=True)
    monkeypatch.setattr(multisource, "SOURCE_KINDS", dict(multisource.SOURCE_KINDS))  # for this test only
    assert multisource.register_source_kind("listed", kind) is kind
    assert multisource.register_source_kind("listed", kind) is kind  # the same registration again is harmless
    with pytest.raises(ConfigError, match="'image_folder' is already registered"):
        multisource.register_source_kind("image_folder", kind)
    with pytest.raises(ConfigError, match="lower-case Python identifier"):
        multisource.register_source_kind("My-Kind", kind)
    folders, _ = roots
    data = MultiSourceData("ms", {
        "brain_tumor": {"kind": "image_folder", "root": str(folders), "class_map": FOLDER_MAP, "cache": "memory"},
        "hospital": {"kind": "listed", "root": str(listed), "train": files[:10], "test": files[10:]}},
        VOCAB, cache="memory", val_fraction=0.3)
    splits = _load(data)
    assert set(splits.extra_tests) >= {"test_hospital", "val_brain_tumor", "val_hospital"}
    assert sorted(splits.extra_tests["test_hospital"].keys) == ["hospital:p10/a.png", "hospital:p11/a.png"]
    assert splits.report["sources"]["hospital"]["patients_known"] is True
    train, test, _ = data.records()  # the audit's view includes it
    assert sum(r.key.startswith("Training/hospital:") for r in train) == 10
    assert sum(r.key.startswith("Testing/hospital:") for r in test) == 2


# ----------------------------------------------------------------------------- the audit across sources

def test_the_audit_finds_a_copy_planted_across_sources_and_takes_it_out_of_the_clean_test(roots):
    folders, slices = roots
    data = _data(roots)
    train, _, _ = data.records()
    tcga_train = next(r for r in train if r.key.startswith("Training/tcga_lgg:flair/glioma_tumor/"))
    planted = folders / "Testing" / "glioma_tumor" / "planted copy.png"
    shutil.copyfile(tcga_train.path, planted)  # one public set's slice inside another's test split

    train, test, classes = data.records()
    assert {r.key.split("/", 1)[0] for r in train} == {"Training"} and {r.key.split("/", 1)[0] for r in test} == {"Testing"}
    settings = AuditSettings(workers=1)
    prints = fingerprint_records(train + test, settings)
    duplicates = find_duplicates(prints, settings)
    cross = cross_source_pairs(prints.facts, duplicates.pairs)
    planted_key = "Testing/brain_tumor:Testing/glioma_tumor/planted copy.png"
    assert [sorted([p["a"], p["b"]]) for p in cross] == [sorted([tcga_train.key, planted_key])]
    assert cross[0]["straddles_train_test"]
    manifest = clean_split(prints.facts, duplicates, classes, data.train_dir, data.test_dir)
    assert manifest["test_leaked"] == [planted_key] and planted_key not in manifest["test_deleaked"]


def test_cramers_v_is_one_when_the_source_fixes_the_label_and_zero_when_independent():
    assert cramers_v(np.array([[30, 0], [0, 20]])) == pytest.approx(1.0)
    assert cramers_v(np.array([[10, 10], [20, 20]])) == pytest.approx(0.0)
    assert 0.3 < cramers_v(np.array([[30, 10], [5, 25]])) < 0.7


def _facts(sources: list[str], labels: list[int]) -> list[ImageFacts]:
    return [ImageFacts(f"Training/{s}:img{i}.png", "Training", label, 1000 + i % 7, "x", 64, 64, "L", "PNG")
            for i, (s, label) in enumerate(zip(sources, labels, strict=True))]


def test_the_source_check_flags_a_source_that_shows_in_the_image_and_decides_the_label():
    rng = np.random.default_rng(0)
    n = 60
    sources = ["a"] * n + ["b"] * n
    labels = [0] * 50 + [1] * 10 + [1] * 50 + [0] * 10  # mostly 0 in source a, mostly 1 in source b
    pattern = rng.standard_normal(256)
    thumbs = rng.standard_normal((2 * n, 256)) * 0.5
    thumbs[n:] += pattern  # source b carries a texture of its own
    found = source_shortcut_check(_facts(sources, labels), thumbs, ["no", "yes"], "Training", AuditSettings())
    assert found["from_image"] >= 0.9 and found["label_source_association"]["Training"] > 0.5
    assert found["shortcut"] is True
    assert found["counts"]["Training"] == {"a": {"no": 50, "yes": 10}, "b": {"no": 10, "yes": 50}}

    balanced = [0, 1] * n  # the same sources, the label independent of them: no shortcut
    found = source_shortcut_check(_facts(sources, balanced), thumbs, ["no", "yes"], "Training", AuditSettings())
    assert found["label_source_association"]["Training"] < 0.1 and found["shortcut"] is False

    alike = rng.standard_normal((2 * n, 256))  # sources that look alike: not predictable, no shortcut
    found = source_shortcut_check(_facts(sources, labels), alike, ["no", "yes"], "Training", AuditSettings())
    assert found["from_image"] < 0.75 and found["shortcut"] is False


# ----------------------------------------------------------------------------- an untrusted slices.csv

def _slice_list(tmp_path: Path, table: bytes) -> SlicesCsvSource:
    """A slice source whose root holds four PNGs (flair/s0..s3.png) and `table` as its slices.csv."""
    rng = np.random.default_rng(0)
    root = tmp_path / "lgg"
    for i in range(4):
        _png(root / "flair" / f"s{i}.png", rng)
    (root / "slices.csv").write_bytes(table)
    return SlicesCsvSource(root=str(root), test_fraction=0.5)


@pytest.mark.parametrize(("table", "problem"), [
    ("file,class,patient\nflair/s0.png,tum\xe9or,p1\n".encode("latin-1"), r"line 2: byte 0xe9 is not UTF-8"),
    (b"file,class,patient\n" + b"a" * 200_000 + b",x,p\n", r"line 2: not a valid CSV \(field larger"),
    (b"file,class,patient\nflair/s0.png,a,p1\nflair/s1.png\n", r"line 3: no value in column\(s\) \['class'"),
    (b"file,class,patient\nflair/s0.png,a,p\x001\n", r"line 2: a NUL character"),
    (b"file,patient\nflair/s0.png,p1\n", r"column\(s\) \['class'\] missing"),
], ids=["latin1", "overlong_field", "short_row", "nul", "no_class_column"])
def test_a_slice_list_that_is_not_a_clean_utf8_csv_is_one_data_error(tmp_path, table, problem):
    with pytest.raises(DataError, match=r"slices\.csv.*" + problem) as caught:
        _slice_list(tmp_path, table).rows()
    assert "\n" not in str(caught.value) and "Fix slices.csv" in str(caught.value)


def test_a_slice_list_with_a_byte_order_mark_reads(tmp_path):
    _, rows = _slice_list(tmp_path, b"\xef\xbb\xbffile,class,patient\nflair/s0.png,a,p1\n").rows()
    assert rows == [{"file": "flair/s0.png", "class": "a", "patient": "p1"}]


def test_slice_rows_that_lead_out_of_the_root_are_refused(tmp_path):
    outside = tmp_path / "outside"
    _png(outside / "secret.png", np.random.default_rng(1))
    source = _slice_list(tmp_path, b"")
    root = Path(source.root)
    (root / "flair" / "link.png").symlink_to(outside / "secret.png")
    (root / "linked").symlink_to(outside)
    (root / "slices.csv").write_text("file,class,patient\nflair/s0.png,a,p1\n"
                                     f"{outside / 'secret.png'},a,p2\n../outside/secret.png,b,p3\n"
                                     "flair/link.png,b,p4\nlinked/secret.png,a,p5\nflair/s1.png,b,p6\n")
    with pytest.raises(DataError, match=r"slices\.csv: 4 row\(s\) name a file outside the data") as caught:
        MultiSourceData("x", {"s": source}, ["a", "b"], cache="memory").records()
    message = str(caught.value)
    for line, file in ((3, outside / "secret.png"), (4, "../outside/secret.png"), (5, "flair/link.png"),
                       (6, "linked/secret.png")):
        assert f"line {line}: '{file}'" in message
    assert "line 2" not in message and "line 7" not in message


def test_a_missing_slice_with_the_disk_cache_is_one_data_error(tmp_path):
    rows = "".join(f"flair/s{i}.png,{'ab'[i % 2]},p{i}\n" for i in range(4)) + "flair/gone.png,a,p9\n"
    source = _slice_list(tmp_path, ("file,class,patient\n" + rows).encode())
    data = MultiSourceData("x", {"s": source}, ["a", "b"], cache="disk", cache_dir=str(tmp_path / "cache"),
                           val_fraction=0.5, decode_workers=1)
    with pytest.raises(DataError, match=r"flair/gone\.png: cannot decode image \(FileNotFoundError"):
        _load(data)

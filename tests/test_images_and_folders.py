"""Image decoding, folder scanning, class mapping, splits and the decode-once cache."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medzoo.datasets import cache as cache_module
from medzoo.datasets.folder_scan import scan_split
from medzoo.datasets.image_folder import ImageFolderSource
from medzoo.datasets.images import MAX_PIXELS, decode_image, to_channels
from medzoo.datasets.roots import resolve_root
from medzoo.errors import ConfigError, DataError
from medzoo.transforms.spec import TransformSpec
from tests.helpers import make_image_folder

RESIZE_32 = [{"_target_": "albumentations.Resize", "height": 32, "width": 32}]


def source(root, **kw) -> ImageFolderSource:
    settings = dict(name="synthetic", root=str(root), channels=1, val_fraction=0.25, cache="memory")
    settings.update(kw)
    return ImageFolderSource(**settings)


def load(src):
    spec = TransformSpec(pre=RESIZE_32)
    return src.load(spec.preprocess, spec.pre_spec)


def test_rgb_with_equal_channels_decodes_to_one_channel(tmp_path):
    gray = np.random.default_rng(0).integers(0, 255, (20, 30), dtype=np.uint8)
    Image.fromarray(np.stack([gray] * 3, -1)).save(tmp_path / "gray (1).png")
    colour = np.stack([gray, gray // 2, 255 - gray], -1)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    decoded = decode_image(tmp_path / "gray (1).png")
    assert decoded.stored_gray and decoded.pixels.shape == (20, 30, 1)
    np.testing.assert_array_equal(decoded.pixels[..., 0], gray)
    decoded = decode_image(tmp_path / "colour.png")
    assert not decoded.stored_gray and decoded.pixels.shape == (20, 30, 3)


def test_to_channels_replicates_and_converts():
    one = np.full((4, 4, 1), 7, np.uint8)
    assert to_channels(one, 3).shape == (4, 4, 3)
    colour = np.zeros((4, 4, 3), np.uint8)
    colour[..., 1] = 100
    assert to_channels(colour, 1)[0, 0, 0] == round(0.587 * 100)


def test_scan_maps_folder_names_and_handles_odd_file_names(tmp_path):
    make_image_folder(tmp_path, 3, 2, classes=("glioma", "notumor"))
    records, classes = scan_split(tmp_path, "Training", {"notumor": "no_tumor", "glioma": "glioma_tumor"})
    assert classes == ["glioma_tumor", "no_tumor"]
    assert len(records) == 6 and all(" (" in r.key for r in records)
    assert records[0].key.startswith("Training/glioma/")


def test_class_missing_from_testing_names_the_folder(tmp_path):
    make_image_folder(tmp_path, 3, 2, classes=("a", "b"))
    for f in (tmp_path / "Testing" / "b").iterdir():
        f.unlink()
    (tmp_path / "Testing" / "b").rmdir()
    with pytest.raises(DataError, match=r"\['b'\].*missing"):
        source(tmp_path).records()


def test_empty_class_folder_is_an_error_naming_it(tmp_path):
    make_image_folder(tmp_path, 3, 2, classes=("a", "b"))
    (tmp_path / "Training" / "c").mkdir()
    with pytest.raises(DataError, match="empty class folder: .*Training/c"):
        source(tmp_path).records()


def test_missing_root_names_both_settings(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="data.root") as info:
        resolve_root(str(tmp_path / "nowhere"), "brain-tumor-mri", "Training")
    assert "MEDZOO_DATA" in str(info.value)
    monkeypatch.setenv("MEDZOO_DATA", str(tmp_path / "empty"))
    with pytest.raises(DataError, match="data.root=PATH or MEDZOO_DATA"):
        resolve_root(None, "brain-tumor-mri", "Training")


def test_root_found_through_medzoo_data(tmp_path, monkeypatch):
    make_image_folder(tmp_path / "brain-tumor-mri", 2, 1)
    monkeypatch.setenv("MEDZOO_DATA", str(tmp_path))
    assert resolve_root(None, "brain-tumor-mri", "Training") == tmp_path / "brain-tumor-mri"


def test_missing_public_set_offline_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDZOO_DATA", str(tmp_path))
    with pytest.raises(DataError, match="data.root"):
        resolve_root(None, "brain-tumor-mri", "Training", fetch="brain_tumor")


def test_corrupt_image_raises_with_file_and_fix_or_is_skipped_and_reported(tmp_path):
    make_image_folder(tmp_path, 4, 2, classes=("a", "b"))
    bad = tmp_path / "Training" / "a" / "broken (x).jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DataError, match=r"broken \(x\)\.jpg.*data.on_error=skip"):
        load(source(tmp_path))
    splits = load(source(tmp_path, on_error="skip"))
    assert splits.report["training"]["skipped"] == 1
    assert splits.report["training"]["skipped_files"] == ["Training/a/broken (x).jpg"]
    assert len(splits.train.labels) + len(splits.val.labels) == 8


def test_decompression_bomb_is_refused(tmp_path):
    side = int(MAX_PIXELS**0.5) + 100
    Image.new("L", (side, side)).save(tmp_path / "bomb.png", optimize=True)
    with pytest.raises(DataError, match="decompression bomb"):
        decode_image(tmp_path / "bomb.png")


def test_validation_split_is_stratified_seeded_and_disjoint(tmp_path):
    make_image_folder(tmp_path, 12, 2, classes=("a", "b"))
    first, again, other = (load(source(tmp_path, split_seed=s)) for s in (0, 0, 1))
    assert first.val.keys == again.val.keys and first.val.keys != other.val.keys
    assert not set(first.val.keys) & set(first.train.keys)
    assert np.bincount(first.val.labels).tolist() == [3, 3]
    assert all(k.startswith("Testing/") for k in first.test.keys)
    assert first.train.images.shape[1:] == (1, 32, 32) and first.train.images.dtype == np.uint8


def test_disk_cache_decodes_once(tmp_path, monkeypatch):
    make_image_folder(tmp_path / "data", 4, 2, classes=("a", "b"))
    src = source(tmp_path / "data", cache="disk", cache_dir=str(tmp_path / "cache"))
    first = load(src)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although the cache is valid")

    monkeypatch.setattr(cache_module, "decode_image", no_decoding)
    second = load(src)
    np.testing.assert_array_equal(first.train.images, second.train.images)
    assert first.test.keys == second.test.keys


def test_cache_is_rebuilt_when_a_file_changes(tmp_path):
    make_image_folder(tmp_path / "data", 4, 2, classes=("a", "b"))
    src = source(tmp_path / "data", cache="disk", cache_dir=str(tmp_path / "cache"))
    before = load(src).test
    changed = tmp_path / "data" / "Testing" / "a" / "img (0).jpg"
    Image.fromarray(np.full((40, 40), 255, np.uint8)).save(changed)
    after = load(src).test
    assert len(list((tmp_path / "cache").glob("synthetic-test-*.npy"))) == 2
    assert before.keys == after.keys
    row = before.keys.index("Testing/a/img (0).jpg")
    assert before.images[row].min() < 200  # it was a picture, not already white
    assert (after.images[row] == 255).all()  # the new pixels are served, not the cached old ones
    others = [i for i in range(len(after.keys)) if i != row]
    assert np.array_equal(before.images[others], after.images[others])


def _manifest(tmp_path, groups, drop, deleaked):
    path = tmp_path / "clean_split.json"
    path.write_text(json.dumps({"groups": [{"id": i, "members": m} for i, m in enumerate(groups)],
                                "drop": drop, "test_deleaked": deleaked}))
    return str(path)


def test_clean_split_dedups_training_groups_val_by_group_and_adds_deleaked_test(tmp_path):
    make_image_folder(tmp_path / "data", 12, 3, classes=("a", "b"))
    groups = [[f"Training/a/img ({i}).jpg", f"Training/a/img ({i + 6}).jpg"] for i in range(6)]
    groups.append(["Training/b/img (0).jpg", "Testing/b/img (0).jpg"])  # a cross-split leak
    drop = [g[1] for g in groups[:6]] + ["Training/b/img (0).jpg"]
    deleaked = [f"Testing/{c}/img ({i}).jpg" for c in "ab" for i in range(3) if (c, i) != ("b", 0)]
    manifest = _manifest(tmp_path, groups, drop, deleaked)

    grouped = load(source(tmp_path / "data", clean_split=manifest, val_fraction=0.25))
    train_keys, val_keys = set(grouped.train.keys), set(grouped.val.keys)
    for members in groups:
        inside = [k for k in members if k.startswith("Training/")]
        assert set(inside) <= train_keys or set(inside) <= val_keys, members
    assert sorted(grouped.extra_tests["test_deleaked"].keys) == sorted(deleaked)
    assert len(grouped.test.keys) == 6 and grouped.report["group_aware_val"]

    deduped = load(source(tmp_path / "data", clean_split=manifest, dedup=True))
    kept = set(deduped.train.keys) | set(deduped.val.keys)
    assert len(kept) == 24 - 7 and not kept & set(drop) and deduped.report["dedup_dropped"] == 7
    assert len(deduped.test.keys) == 6  # the shipped test split is never thinned


def test_dedup_without_a_manifest_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="data.clean_split"):
        source(tmp_path, dedup=True)
    make_image_folder(tmp_path / "data", 2, 1, classes=("a", "b"))
    with pytest.raises(DataError, match="medzoo audit"):
        load(source(tmp_path / "data", clean_split=str(tmp_path / "missing.json")))


def test_clean_split_auto_audits_once_and_finds_a_planted_leak(tmp_path, monkeypatch):
    import shutil

    from medzoo.audit import manifest as audit_module

    rng = np.random.default_rng(0)
    for split, count in (("Training", 6), ("Testing", 2)):
        for name in ("a", "b"):
            (tmp_path / "data" / split / name).mkdir(parents=True)
            for i in range(count):  # smooth random images, unlike each other (unlike make_image_folder's)
                small = rng.integers(0, 255, (6, 6), dtype=np.uint8)
                Image.fromarray(small).resize((48, 48), Image.BICUBIC).save(tmp_path / "data" / split / name / f"{i}.png")
    shutil.copy(tmp_path / "data" / "Training" / "a" / "0.png", tmp_path / "data" / "Testing" / "a" / "leak.png")
    src = source(tmp_path / "data", clean_split="auto", cache="disk", cache_dir=str(tmp_path / "cache"))
    first = load(src)
    assert "Testing/a/leak.png" in first.test.keys
    assert "Testing/a/leak.png" not in first.extra_tests["test_deleaked"].keys
    assert len(first.extra_tests["test_deleaked"].keys) == len(first.test.keys) - 1
    assert len(list((tmp_path / "cache").glob("synthetic-clean-split-*.json"))) == 1

    def no_audit(*args, **kwargs):
        raise AssertionError("audited again although the manifest is cached")

    monkeypatch.setattr(audit_module, "audit_manifest", no_audit)
    assert load(src).extra_tests["test_deleaked"].keys == first.extra_tests["test_deleaked"].keys


# ----------------------------------------------------------------------------- untrusted folders

def _plant(root, tmp_path, kind: str) -> tuple[str, str]:
    """Put one unsafe entry of `kind` under `root`; returns its key and the reason the scan must give."""
    outside = make_image_folder(tmp_path / "outside", 2, 1, classes=("c",))
    if kind == "file link":
        (root / "Training" / "a" / "escape (1).jpg").symlink_to(outside / "Training" / "c" / "img (0).jpg")
        return "Training/a/escape (1).jpg", "outside the data root"
    if kind == "folder link":
        (root / "Training" / "c").symlink_to(outside / "Training" / "c", target_is_directory=True)
        return "Training/c", "outside the data root"
    if kind == "broken link":
        (root / "Training" / "a" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
        return "Training/a/gone.jpg", "broken symlink"
    if not hasattr(os, "mkfifo"):
        pytest.skip("named pipes need a POSIX system: os.mkfifo is missing here")
    os.mkfifo(root / "Training" / "a" / "pipe.jpg")  # reading it would block forever
    return "Training/a/pipe.jpg", "not a regular file"


@pytest.mark.parametrize("kind", ["file link", "folder link", "broken link", "pipe"])
def test_unsafe_entry_raises_naming_it_or_is_skipped_and_reported(tmp_path, kind):
    root = make_image_folder(tmp_path / "data", 4, 2, classes=("a", "b"))
    key, reason = _plant(root, tmp_path, kind)
    with pytest.raises(DataError, match=f"unsafe entry under the data root.*{reason}.*data.on_error=skip") as caught:
        load(source(root))
    assert key in str(caught.value)
    splits = load(source(root, on_error="skip"))
    training = splits.report["training"]
    assert training["skipped"] == training["skipped_at_scan"] == 1 and training["skipped_files"] == [key]
    assert reason in training["skip_reasons"][key]
    assert len(splits.train.labels) + len(splits.val.labels) == 8 == splits.report["train_files"] - 1
    assert splits.classes == ["a", "b"]


def test_links_inside_the_root_are_followed_and_non_images_are_listed(tmp_path):
    root = make_image_folder(tmp_path / "data", 4, 2, classes=("a", "b"))
    (root / "Training" / "a" / "alias.jpg").symlink_to(Path("..") / "b" / "img (0).jpg")
    (root / "Training" / "a" / "README.txt").write_text("notes")
    splits = load(source(root))
    assert len(splits.train.labels) + len(splits.val.labels) == 9
    assert splits.report["training"]["skipped"] == 0
    assert splits.report["training"]["ignored_files"] == ["Training/a/README.txt"]


def test_zero_byte_image_raises_naming_it_or_is_skipped_and_reported(tmp_path):
    root = make_image_folder(tmp_path, 4, 2, classes=("a", "b"))
    (root / "Testing" / "b" / "empty (1).png").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty \(1\)\.png: empty file \(0 bytes\).*data.on_error=skip"):
        load(source(root))
    splits = load(source(root, on_error="skip"))
    assert splits.report["testing"]["skipped_files"] == ["Testing/b/empty (1).png"]
    assert len(splits.test.labels) == 4 == splits.report["test_files"] - splits.report["testing"]["skipped"]


def test_tiff_whose_strips_miss_part_of_the_image_is_refused_not_decoded_black(tmp_path):
    import tifffile

    pixels = np.random.default_rng(3).integers(1, 4000, (64, 48)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "full.tif", pixels, rowsperstrip=64)
    decoded = decode_image(tmp_path / "full.tif")
    assert decoded.pixels.shape == (64, 48, 1) and decoded.pixels.max() == 255
    with tifffile.TiffFile(tmp_path / "full.tif") as tif:
        height = tif.pages[0].tags["ImageLength"]
        where, fmt = height.valueoffset, "<H" if height.dtype == 3 else "<I"
    raw = bytearray((tmp_path / "full.tif").read_bytes())
    raw[where:where + struct.calcsize(fmt)] = struct.pack(fmt, 640)  # one 64-row strip for 640 rows
    (tmp_path / "tall.tif").write_bytes(bytes(raw))
    # Pillow alone decodes this to 640 rows, 576 of them black, without a word.
    with pytest.raises(DataError, match=r"tall\.tif: truncated or corrupt TIFF: 1 strip\(s\) for a 48x640 image"):
        decode_image(tmp_path / "tall.tif")
    (tmp_path / "cut.tif").write_bytes((tmp_path / "full.tif").read_bytes()[:3000])
    with pytest.raises(DataError, match=r"cut\.tif: truncated or corrupt TIFF: its image data needs bytes up to"):
        decode_image(tmp_path / "cut.tif")


@pytest.mark.parametrize("damage", ["not json", "a list", "labels short", "label text", "wrong shape",
                                    "objects", "truncated array"])
def test_a_damaged_disk_cache_is_decoded_again_with_a_warning(tmp_path, damage, caplog):
    make_image_folder(tmp_path / "data", 4, 2, classes=("a", "b"))
    src = source(tmp_path / "data", cache="disk", cache_dir=str(tmp_path / "cache"))
    first = load(src)
    array = next((tmp_path / "cache").glob("synthetic-test-*.npy"))
    meta_path = array.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    if damage == "not json":
        meta_path.write_text("{")
    elif damage == "a list":
        meta_path.write_text("[]")
    elif damage == "labels short":
        meta_path.write_text(json.dumps({**meta, "labels": meta["labels"][:-1]}))
    elif damage == "label text":
        meta_path.write_text(json.dumps({**meta, "labels": ["a"] * len(meta["labels"])}))
    elif damage == "wrong shape":
        meta_path.write_text(json.dumps({**meta, "shape": [1, 2, 3]}))
    elif damage == "objects":
        np.save(array, np.array([{"x": 1}] * len(meta["keys"]), dtype=object), allow_pickle=True)
    else:
        array.write_bytes(array.read_bytes()[:200])
    again = load(src)  # one warning naming the cache, then the images are decoded from the files
    assert f"cache {array}" in caplog.text and "decoding again" in caplog.text
    np.testing.assert_array_equal(again.test.images, first.test.images)
    assert again.test.keys == first.test.keys and list(again.test.labels) == list(first.test.labels)
    assert cache_module.read_cached_split(array, meta_path).keys == first.test.keys  # and the cache is whole again


@pytest.mark.parametrize("content, problem", [
    ("{", r"not a readable clean-split manifest \(JSONDecodeError"),
    ("[]", "a JSON object expected, not list"),
    (json.dumps({"groups": [], "drop": "Training/a/x.jpg", "test_deleaked": []}), "`drop` and `test_deleaked` must"),
    (json.dumps({"groups": [{"id": "1", "members": []}], "drop": [], "test_deleaked": []}), "`groups` must be"),
    (json.dumps({"groups": [{"id": 1, "members": [3]}], "drop": [], "test_deleaked": []}), "`groups` must be"),
])
def test_a_malformed_clean_split_manifest_is_one_error_naming_the_file(tmp_path, content, problem):
    make_image_folder(tmp_path / "data", 2, 1, classes=("a", "b"))
    (tmp_path / "bad.json").write_text(content)
    with pytest.raises(DataError, match=rf"^{tmp_path / 'bad.json'}: .*{problem}.*medzoo audit"):
        load(source(tmp_path / "data", clean_split=str(tmp_path / "bad.json")))


def test_an_oversized_clean_split_manifest_is_refused_before_it_is_read(tmp_path, monkeypatch):
    from medzoo.audit import manifest as audit_module

    make_image_folder(tmp_path / "data", 2, 1, classes=("a", "b"))
    manifest = _manifest(tmp_path, [], [], [])
    monkeypatch.setattr(audit_module, "MANIFEST_MAX_BYTES", 10)
    monkeypatch.setattr(Path, "read_text", lambda *a, **k: pytest.fail("read although over the bound"))
    with pytest.raises(DataError, match=r"clean_split\.json: \d+ bytes, more than the 10 a clean-split manifest"):
        load(source(tmp_path / "data", clean_split=manifest))


def test_a_damaged_cached_clean_split_is_audited_again(tmp_path, caplog):
    make_image_folder(tmp_path / "data", 12, 2, classes=("a", "b"))
    src = source(tmp_path / "data", clean_split="auto", cache="disk", cache_dir=str(tmp_path / "cache"))
    first = load(src)
    cached = next((tmp_path / "cache").glob("synthetic-clean-split-*.json"))
    cached.write_text(json.dumps({"groups": "everything"}))
    again = load(src)
    assert f"{cached}: not a clean-split manifest" in caplog.text and "auditing again" in caplog.text
    assert again.report["test_deleaked"] == first.report["test_deleaked"]
    assert again.report["group_aware_val"] and sorted(again.val.keys) == sorted(first.val.keys)
    assert json.loads(cached.read_text())["groups"] != "everything"  # written again by the new audit


def test_an_empty_deleaked_test_split_is_left_out_with_a_warning(tmp_path, caplog):
    # every test image with a copy in training: training finished, then the final evaluation crashed on none
    make_image_folder(tmp_path / "data", 12, 2, classes=("a", "b"))
    loaded = load(source(tmp_path / "data", clean_split=_manifest(tmp_path, [], [], [])))
    assert "test_deleaked" not in loaded.extra_tests and len(loaded.test.keys) == 4
    assert "the test split 'test_deleaked' holds no images; it is left out of the metrics" in caplog.text
    with pytest.raises(ConfigError, match="use split= one of train, val, test$"):
        loaded.split("test_deleaked")

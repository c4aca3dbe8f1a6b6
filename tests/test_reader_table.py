"""One reader table (issue 15): every format in `READERS`, one lookup by suffix and content (`reader_for`), the
`image` reader decoding as image folders always have, and `read_volume` refusing a whole-dataset file."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medzoo.datasets import images
from medzoo.datasets.medmnist import read_medmnist as read_medmnist_reexported
from medzoo.datasets.readers import registry
from medzoo.datasets.readers.registry import READERS, read_volume, reader_for, volume_suffixes
from medzoo.errors import ConfigError, DataError
from tests.dicom_builders import write_dicom_slice

# The formats issue 15 names, with the suffixes and kind each must have in the table.
EXPECTED = {
    "nifti": ((".nii", ".nii.gz"), "sample"),
    "dicom": ((".dcm", ".dicom", ".ima"), "sample"),
    "tiff": ((".tif", ".tiff"), "sample"),
    "npy": ((".npy",), "sample"),
    "npz": ((".npz",), "sample"),
    "image": ((".jpg", ".jpeg", ".png", ".bmp", ".gif"), "sample"),
    "medmnist": ((".npz",), "dataset"),
}


def write_medmnist(path, members=("train", "val", "test")) -> None:
    arrays = {}
    for split in members:
        arrays[f"{split}_images"] = np.zeros((2, 4, 4), np.uint8)
        arrays[f"{split}_labels"] = np.array([[0], [1]], np.uint8)
    np.savez(path, **arrays)


def test_every_format_is_in_the_one_table_with_its_suffixes_and_kind(tmp_path):
    assert {name: (spec.suffixes, spec.kind) for name, spec in READERS.items()} == EXPECTED
    for name, spec in READERS.items():
        assert callable(spec.load()), name
        for suffix in spec.suffixes:
            if suffix != ".npz":  # shared by two readers; decided by content below
                assert reader_for(tmp_path / f"file{suffix.upper()}").name == name
    assert reader_for(tmp_path / "absent.npz").name == "npz"  # no file to look into: the NumPy reader
    assert reader_for(tmp_path / "stack.tif").name == "tiff"  # .tif by suffix stays with tifffile
    assert READERS["medmnist"].load() is read_medmnist_reexported
    # Files read_volume reads: every sample reader's suffix, each once; the dataset reader adds none.
    suffixes = volume_suffixes()
    assert len(suffixes) == len(set(suffixes))
    assert set(suffixes) == {s for suffixes, kind in EXPECTED.values() if kind == "sample" for s in suffixes}


def test_an_npz_is_medmnist_or_numpy_by_its_member_names_without_loading_arrays(tmp_path, monkeypatch):
    write_medmnist(tmp_path / "breast.npz")
    write_medmnist(tmp_path / "partial.npz", members=("train",))  # some MedMNIST names are not enough
    np.savez(tmp_path / "plain.npz", image=np.zeros((4, 4), np.float32))
    (tmp_path / "damaged.npz").write_bytes(b"PK\x03\x04 not really a zip")
    write_medmnist(tmp_path / "breast.data")  # np.savez adds .npz: rename it to a suffix no reader claims
    (tmp_path / "breast.data.npz").rename(tmp_path / "breast.data")

    def no_array_loading(*args, **kwargs):
        raise AssertionError("reader_for loaded the archive's arrays")

    monkeypatch.setattr(np, "load", no_array_loading)
    assert reader_for(tmp_path / "breast.npz").name == "medmnist"
    assert reader_for(tmp_path / "partial.npz").name == "npz"
    assert reader_for(tmp_path / "plain.npz").name == "npz"
    assert reader_for(tmp_path / "damaged.npz").name == "npz"
    assert reader_for(tmp_path / "breast.data").name == "medmnist"


def test_a_dicom_file_without_a_suffix_is_found_by_its_preamble(tmp_path):
    pixels = np.arange(12, dtype=np.int16).reshape(3, 4)
    write_dicom_slice(tmp_path / "IM0001", pixels, series_uid="1.2.3")
    write_dicom_slice(tmp_path / "IM0002.raw", pixels, series_uid="1.2.3")
    assert reader_for(tmp_path / "IM0001").name == "dicom"
    assert reader_for(tmp_path / "IM0002.raw").name == "dicom"
    np.testing.assert_array_equal(read_volume(tmp_path / "IM0001").array[0, 0], pixels)

    shifted = bytearray(200)
    shifted[100:104] = b"DICM"  # the marker, but not where DICOM puts it
    (tmp_path / "IM0003").write_bytes(bytes(shifted))
    (tmp_path / "notes").write_text("not an image")
    for name in ("IM0003", "notes"):
        with pytest.raises(DataError, match="no reader for this file type"):
            reader_for(tmp_path / name)


def pillow_expected(path) -> np.ndarray:
    """What Pillow decodes, channels first, an RGB file with R=G=B as one channel (the image-folder rule)."""
    with Image.open(path) as image:
        pixels = np.asarray(image)
    pixels = pixels[..., None] if pixels.ndim == 2 else pixels
    if pixels.shape[-1] == 3 and (pixels[..., :1] == pixels).all():
        pixels = pixels[..., :1]
    return np.moveaxis(pixels, -1, 0)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp"])
@pytest.mark.parametrize("colour", ["grey", "rgb", "rgb_stored_grey"])
def test_the_image_reader_gives_the_pixels_image_folders_decode(tmp_path, suffix, colour):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (6, 5), dtype=np.uint8)
    pixels = {"grey": grey, "rgb": rng.integers(0, 256, (6, 5, 3), dtype=np.uint8),
              "rgb_stored_grey": np.repeat(grey[..., None], 3, axis=-1)}[colour]
    path = tmp_path / f"x{suffix}"
    Image.fromarray(pixels).save(path)

    assert reader_for(path).name == "image"
    volume = read_volume(path)
    folder = images.decode_image(path)  # what ImageFolderSource's cache stores (H x W x C)
    assert volume.array.dtype == np.uint8 and volume.spatial_dims == 2
    np.testing.assert_array_equal(volume.array, np.moveaxis(folder.pixels, -1, 0))
    np.testing.assert_array_equal(volume.array, pillow_expected(path))
    assert volume.array.shape[0] == (3 if colour == "rgb" else 1)
    assert volume.meta["spacing_known"] is False
    if suffix != ".jpg":  # lossless formats: exactly what was written
        written = np.moveaxis(pixels, -1, 0) if colour == "rgb" else grey[None]
        np.testing.assert_array_equal(volume.array, written)


def test_tiff_keeps_both_readers_tifffile_by_suffix_and_pillow_for_image_folders(tmp_path):
    stored = (np.arange(20, dtype=np.uint16).reshape(4, 5) * 1000)
    path = tmp_path / "slice.tif"
    Image.fromarray(stored).save(path)
    by_suffix = read_volume(path)  # the tiff reader: the stored dtype and values
    assert by_suffix.array.dtype == np.uint16
    np.testing.assert_array_equal(by_suffix.array[0], stored)
    as_image = read_volume(path, reader="image")  # the image reader, asked by name: uint8 as image folders
    np.testing.assert_array_equal(as_image.array, np.moveaxis(images.decode_image(path).pixels, -1, 0))
    assert as_image.array.dtype == np.uint8 and as_image.array.max() == 255
    assert ".tif" in images.IMAGE_EXTENSIONS and ".gif" not in images.IMAGE_EXTENSIONS  # folders unchanged


@pytest.mark.parametrize("reader", ["auto", "medmnist"])
def test_read_volume_refuses_a_medmnist_file_in_one_line(tmp_path, reader):
    path = tmp_path / "breastmnist.npz"
    write_medmnist(path)
    with pytest.raises(DataError) as raised:
        read_volume(path, reader=reader)
    message = str(raised.value)
    assert "\n" not in message and str(path) in message
    assert f"data=medmnist data.path={path}" in message
    assert set(read_medmnist_reexported(path)) == {"train", "val", "test"}  # the dataset path still reads it


def first_reader(path, **options):
    """a module-level reader"""
    return registry.make_volume(np.zeros((1, 2, 2), np.uint8), path, None)


def second_reader(path, **options):
    """another module-level reader"""
    return registry.make_volume(np.ones((1, 2, 2), np.uint8), path, None)


def test_a_reader_name_registered_twice_with_different_code_is_an_error(monkeypatch):
    monkeypatch.setattr(registry, "READERS", dict(registry.READERS))
    spec = registry.register_reader("twice", first_reader, [".twice"])
    assert registry.register_reader("twice", first_reader, [".twice"]) == spec  # the same code again: harmless
    with pytest.raises(ConfigError, match="reader 'twice' is already registered"):
        registry.register_reader("twice", second_reader, [".twice"])
    with pytest.raises(ConfigError, match="reader 'image' is already registered"):
        registry.register_reader("image", second_reader, [".other"])
    with pytest.raises(ConfigError, match="'.png' already belongs to reader 'image'"):
        registry.register_reader("mine", second_reader, [".png"])
    assert registry.READERS["twice"].load() is first_reader

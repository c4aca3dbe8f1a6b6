"""Volume and slice-stack readers: NIfTI, DICOM series, TIFF, NumPy -> channel-first arrays and metadata."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import sys
import warnings
from collections import Counter
from importlib.resources import files
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from medzoo.datasets.readers import READERS, read_volume
from medzoo.datasets.readers import registry as readers_base
from medzoo.datasets.readers.dicom import read_dicom_series
from medzoo.datasets.readers.nifti import read_nifti, read_nifti_channels
from medzoo.datasets.readers.numpy_io import read_npy, read_npz
from medzoo.datasets.readers.registry import check_finite, reader_for
from medzoo.datasets.readers.tiff import read_tiff
from medzoo.errors import DataError, UnknownNameError
from tests.conftest import SHARED_DATA
from tests.dicom_builders import write_dicom_slice

STROKE = SHARED_DATA / "volumes" / "nifti" / "stroke"
SAG_ANON = SHARED_DATA / "volumes" / "dicom" / "SAG-anon-128"
NIBABEL_DATA = Path(str(files("nibabel") / "tests" / "data"))
PYDICOM_SERIES = Path(get_testdata_file("MR_small.dcm")).parent / "dicomdirtests"


def need(path: Path) -> Path:
    """`path`, or a skip that says which real file is missing."""
    if not path.exists():
        pytest.skip(f"real test data not found at {path} (set MEDZOO_TEST_DATA to shared/data)")
    return path


def zyx(xyz: np.ndarray) -> np.ndarray:
    """Reference layout: a nibabel (x, y, z[, c]) array as the readers' (c, z, y, x)."""
    return xyz.transpose(2, 1, 0)[None] if xyz.ndim == 3 else xyz.transpose(3, 2, 1, 0)


# ----------------------------------------------------------------------------- DICOM writing helpers

def write_slice(path: Path, pixels: np.ndarray, *, spacing=(0.7, 0.8), **kw) -> None:
    """One single-frame MR DICOM file (explicit VR little endian, signed 16-bit)."""
    write_dicom_slice(path, pixels, spacing=spacing, **kw)


def write_series(folder: Path, volume: np.ndarray, *, step: float = 2.5, orientation=(1, 0, 0, 0, 1, 0),
                 origin=(0.0, 0.0, 0.0), series_uid: str | None = None, seed: int = 0,
                 slopes: list[float] | None = None, **kw) -> dict:
    """Write `volume` (D, H, W) as one file per slice, with shuffled file names and shuffled InstanceNumbers.

    Returns the series UID and the file of each slice, in slice order.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    series_uid = series_uid or generate_uid()
    row, col = np.array(orientation[:3], float), np.array(orientation[3:], float)
    normal = np.cross(row, col)
    depth = len(volume)
    names = [f"im{n:04d}.dcm" for n in rng.permutation(depth) * 7 + 3]
    instances = rng.permutation(depth) + 1
    paths = []
    for index in rng.permutation(depth):  # files also written in a random order
        position = np.array(origin) + index * step * normal
        path = folder / names[index]
        write_slice(path, volume[index], series_uid=series_uid, position=position, orientation=orientation,
                    instance=int(instances[index]), **({"slope": slopes[index]} if slopes else {}), **kw)
        paths.append((index, path))
    paths = [p for _, p in sorted(paths)]
    return {"uid": series_uid, "paths": paths}


def volume_i16(shape=(6, 12, 10), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-500, 2000, shape).astype(np.int16)


# ----------------------------------------------------------------------------- registry

def test_registry_resolves_every_reader_and_picks_by_suffix(tmp_path):
    for spec in READERS.values():
        assert callable(spec.load()), spec.name
    picks = {"a.nii": "nifti", "b.NII.GZ": "nifti", "c.npy": "npy", "d.npz": "npz", "e.tif": "tiff",
             "f.tiff": "tiff", "g.dcm": "dicom"}
    for name, reader in picks.items():
        assert reader_for(tmp_path / name).name == reader
    assert reader_for(tmp_path).name == "dicom"  # a folder is a DICOM series
    (tmp_path / "scan.mha").write_bytes(b"x")
    with pytest.raises(DataError, match=r"scan\.mha.*\.nii\.gz.*\.npy.*reader=NAME"):
        read_volume(tmp_path / "scan.mha")
    with pytest.raises(UnknownNameError, match="Did you mean: nifti"):
        read_volume(tmp_path / "scan.mha", reader="nifit")
    with pytest.raises(DataError, match="not found"):
        read_volume(tmp_path / "missing.nii.gz")
    # reader= overrides the suffix
    np.save(tmp_path / "array.bin.npy", np.zeros((2, 4, 4), np.float32))
    (tmp_path / "array.bin.npy").rename(tmp_path / "array.bin")
    assert read_volume(tmp_path / "array.bin", reader="npy").array.shape == (2, 4, 4)


def test_check_finite_scans_in_chunks_and_names_the_first_bad_voxel(monkeypatch):
    monkeypatch.setattr(readers_base, "FINITE_CHUNK_BYTES", 64)  # many chunks: the bad voxel is in a late one
    array = np.zeros((40, 4, 4), np.float32)
    array[33, 2, 1] = np.inf
    array[35, 0, 0] = np.nan
    with pytest.raises(DataError, match=r"vol\.npy: 2 non-finite.*\(33, 2, 1\)"):
        check_finite(array, "vol.npy")
    check_finite(array, "vol.npy", allow_nonfinite=True)
    check_finite(np.zeros((3, 3), np.int16), "ints.npy")


# ----------------------------------------------------------------------------- NIfTI

def test_real_three_contrast_nifti_set_reads_and_stacks():
    paths = [need(STROKE / f"{name}.nii.gz") for name in ("T1", "T2", "FLAIR")]
    t1, t2 = read_volume(paths[0]), read_volume(paths[1])
    assert t1.array.shape == (1, 140, 160, 124) and t1.array.dtype == np.uint8 and t1.array.max() == 252
    assert t1.meta["orientation"] == "SAR" and t1.meta["original_orientation"] == "RAS"
    np.testing.assert_allclose(t1.meta["spacing"], (1.0, 1.0, 1.0), atol=1e-5)
    # T2 carries scl_slope ~2.008: scaled data comes back as float32
    assert t2.array.dtype == np.float32 and t2.meta["scl_slope"] == pytest.approx(2.00784, abs=1e-4)
    assert t2.array.max() == pytest.approx(503.97, abs=0.01)
    reference = nib.as_closest_canonical(nib.load(paths[1])).get_fdata(dtype=np.float32)
    np.testing.assert_allclose(t2.array, zyx(reference), rtol=1e-6)
    stacked = read_nifti_channels(paths)
    assert stacked.array.shape == (3, 140, 160, 124) and stacked.array.dtype == np.float32
    assert stacked.meta["channel_names"] == ["T1", "T2", "FLAIR"]
    np.testing.assert_array_equal(stacked.array[0], t1.array[0])
    np.testing.assert_array_equal(stacked.array[1], t2.array[0])


def test_nibabel_bundled_files_match_as_closest_canonical():
    anatomical = need(NIBABEL_DATA / "anatomical.nii")
    volume = read_nifti(anatomical)
    assert volume.meta["original_orientation"] == "LAS" and volume.meta["orientation"] == "SAR"
    assert volume.array.dtype == np.int16 and volume.array.dtype.isnative  # stored big-endian
    canonical = nib.as_closest_canonical(nib.load(anatomical))
    np.testing.assert_array_equal(volume.array, zyx(canonical.get_fdata()))
    four_d = read_volume(need(NIBABEL_DATA / "example4d.nii.gz"))
    reference = nib.as_closest_canonical(nib.load(NIBABEL_DATA / "example4d.nii.gz")).get_fdata()
    assert four_d.array.shape == (2, 24, 96, 128)  # the 4th axis became the channels
    np.testing.assert_array_equal(four_d.array, zyx(reference))
    np.testing.assert_allclose(four_d.meta["spacing"], (2.2, 2.0, 2.0), atol=1e-5)


def test_lps_nifti_comes_out_equal_to_the_ras_file_of_the_same_grid(tmp_path):
    data = np.random.default_rng(1).integers(0, 1000, (5, 6, 7)).astype(np.int16)
    ras_affine = np.diag([2.0, 3.0, 4.0, 1.0])
    ras_affine[:3, 3] = (-4.0, -7.5, 10.0)
    nib.save(nib.Nifti1Image(data, ras_affine), tmp_path / "ras.nii.gz")
    # The same voxels stored with x and y reversed: LPS axes, origin at the opposite corner.
    lps_affine = ras_affine @ np.array([[-1, 0, 0, 4], [0, -1, 0, 5], [0, 0, 1, 0], [0, 0, 0, 1]], float)
    nib.save(nib.Nifti1Image(data[::-1, ::-1].copy(), lps_affine), tmp_path / "lps.nii")
    ras, lps = read_volume(tmp_path / "ras.nii.gz"), read_volume(tmp_path / "lps.nii")
    assert lps.meta["original_orientation"] == "LPS"
    np.testing.assert_array_equal(lps.array, ras.array)
    np.testing.assert_array_equal(ras.array, zyx(data))
    np.testing.assert_allclose(lps.meta["affine"], ras.meta["affine"])
    assert ras.meta["spacing"] == pytest.approx((4.0, 3.0, 2.0))
    # meta["affine"] maps an output index (d, h, w) to RAS+ mm: d walks z, w walks x
    np.testing.assert_allclose(ras.meta["affine"] @ [2, 1, 3, 1], ras_affine @ [3, 1, 2, 1])
    both = read_nifti_channels([tmp_path / "ras.nii.gz", tmp_path / "lps.nii"])  # one physical grid
    assert both.array.shape == (2, 7, 6, 5)


def test_nifti_scaling_keeps_integers_only_without_slope(tmp_path):
    data = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    plain = nib.Nifti1Image(data, np.eye(4))
    nib.save(plain, tmp_path / "plain.nii")
    scaled = nib.Nifti1Image(data, np.eye(4))
    scaled.header.set_slope_inter(0.5, -10.0)
    nib.save(scaled, tmp_path / "scaled.nii")
    assert read_nifti(tmp_path / "plain.nii").array.dtype == np.uint8
    rgb = np.zeros((3, 4, 5), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["G"] = data
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), tmp_path / "rgb.nii")
    colour = read_nifti(tmp_path / "rgb.nii").array  # RGB voxels: three channels
    assert colour.shape == (3, 5, 4, 3) and colour.dtype == np.uint8
    np.testing.assert_array_equal(colour[1], zyx(data)[0])
    out = read_nifti(tmp_path / "scaled.nii")
    assert out.array.dtype == np.float32
    np.testing.assert_allclose(out.array, zyx(data * 0.5 - 10.0))


def test_nifti_channels_refuse_different_grids(tmp_path):
    data = np.zeros((4, 5, 6), np.uint8)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "a.nii")
    shifted = np.eye(4)
    shifted[0, 3] = 1.5
    nib.save(nib.Nifti1Image(data, shifted), tmp_path / "b.nii")
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 7), np.uint8), np.eye(4)), tmp_path / "c.nii")
    with pytest.raises(DataError, match=r"b\.nii: affine differs.*a\.nii"):
        read_nifti_channels([tmp_path / "a.nii", tmp_path / "b.nii"])
    with pytest.raises(DataError, match=r"c\.nii: grid shape \(7, 5, 4\).*\(6, 5, 4\)"):
        read_nifti_channels([tmp_path / "a.nii", tmp_path / "c.nii"])


def test_truncated_or_nonfinite_nifti_is_a_data_error(tmp_path):
    data = np.random.default_rng(0).normal(size=(20, 20, 20)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "full.nii.gz")
    raw = (tmp_path / "full.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"cut\.nii\.gz: cannot read the voxel data, the file is truncated"):
        read_volume(tmp_path / "cut.nii.gz")
    (tmp_path / "header.nii.gz").write_bytes(gzip.compress(gzip.decompress(raw)[:100]))
    with pytest.raises(DataError, match=r"header\.nii\.gz: not a readable NIfTI"):
        read_volume(tmp_path / "header.nii.gz")
    data[3, 4, 5] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "nan.nii")
    with pytest.raises(DataError, match=r"nan\.nii: 1 non-finite value.*\(0, 5, 4, 3\)"):
        read_volume(tmp_path / "nan.nii")
    assert np.isnan(read_volume(tmp_path / "nan.nii", allow_nonfinite=True).array).sum() == 1


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
@pytest.mark.parametrize("name", ["pipe.npy", "pipe.nii.gz", "pipe.tif", "pipe"])
def test_a_named_pipe_is_refused_not_read_forever(tmp_path, name):
    import threading

    os.mkfifo(tmp_path / name)
    outcome = []

    def read() -> None:
        try:
            read_volume(tmp_path / name)
        except DataError as exc:
            outcome.append(str(exc))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=20)
    if reader.is_alive():  # blocked opening the pipe: a writer that opens and closes it lets the reader go
        os.close(os.open(tmp_path / name, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(timeout=20)
        pytest.fail(f"read_volume waited on the pipe {name}")
    assert outcome == [f"{tmp_path / name}: not a regular file or a folder (a named pipe); medzoo reads images "
                       "from files. Copy the data into a file."]


def test_complex_voxels_are_refused_by_every_reader(tmp_path):
    # complex NIfTI and TIFF read as images, then broke predict (`_to_uint8`) or wrote a cache nothing could open
    data = (np.ones((6, 6, 4)) + 1j * np.ones((6, 6, 4))).astype(np.complex64)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "complex.nii.gz")
    need_tifffile().imwrite(tmp_path / "complex.tif", data[..., 0])
    for name in ("complex.nii.gz", "complex.tif"):
        with pytest.raises(DataError, match=rf"{name}: voxels of type complex64 are not image intensities"):
            read_volume(tmp_path / name)


# ----------------------------------------------------------------------------- DICOM

def test_real_sag_anon_series():
    folder = need(SAG_ANON)
    volume = read_volume(folder)
    assert volume.array.shape == (1, 128, 256, 256) and volume.array.dtype == np.uint16
    assert volume.meta["spacing"] == pytest.approx((0.9, 0.859375, 0.859375), abs=1e-5)
    assert volume.meta["ordered_by"] == "position" and volume.meta["series_description"]
    # Slices run along the normal; here that is the acquisition order, InstanceNumber 33..160.
    assert volume.meta["instance_numbers"] == list(range(33, 161))
    assert volume.meta["skipped"] == {"not DICOM": 3}  # LICENSE.txt, SHA256SUMS, SOURCE_README.md
    assert int(volume.array.max()) == 708
    middle = pydicom.dcmread(folder / volume.meta["files"][64]).pixel_array
    np.testing.assert_array_equal(volume.array[0, 64], middle)
    # positions along the normal are evenly spaced (the x range of DATA.md: -65.99 .. +48.12 mm)
    assert np.diff(volume.meta["positions"]) == pytest.approx(0.9, abs=1e-3)


def test_pydicom_bundled_series_order_rescale_gap_and_mixed_series():
    ct = read_volume(need(PYDICOM_SERIES / "98892001" / "CT5N"))
    assert ct.array.shape == (1, 5, 16, 16) and ct.array.dtype == np.float32
    assert ct.meta["instance_numbers"] == [10, 9, 8, 7, 6]  # by position, not by file name or number
    assert ct.meta["spacing"] == pytest.approx((2.5, 0.488281, 0.488281))
    lowest = pydicom.dcmread(PYDICOM_SERIES / "98892001" / "CT5N" / "3353")
    np.testing.assert_array_equal(ct.array[0, 0], lowest.pixel_array.astype(np.float32) - 1024)
    with pytest.raises(DataError, match=r"gap in the series between 17106.*17136.*161 slice\(s\) missing at "
                                        r"position\(s\) -98\.230"):
        read_volume(PYDICOM_SERIES / "77654033" / "CT2")
    mixed = PYDICOM_SERIES / "98892003" / "MR2"
    uids = {pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID for path in mixed.iterdir()}
    with pytest.raises(DataError, match="mixes 3 DICOM series") as caught:
        read_volume(mixed)
    assert all(uid in str(caught.value) for uid in uids) and "series_uid=" in str(caught.value)
    localizer = "1.3.6.1.4.1.5962.1.1.0.0.0.1196533885.18148.0.481"
    assert read_volume(mixed, series_uid=localizer).array.shape == (1, 1, 16, 16)
    with pytest.raises(DataError, match="not parallel"):  # MR700 is a radial series, not a volume
        read_volume(PYDICOM_SERIES / "98892003" / "MR700")


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_bigendian.dcm"])
def test_compressed_and_big_endian_files_decode_like_the_plain_one(tmp_path, name):
    source = Path(get_testdata_file(name))
    try:
        plain = pydicom.dcmread(source).pixel_array
    except (RuntimeError, NotImplementedError):
        pytest.skip(f"no pixel handler for {name} is installed here")
    shutil.copy(source, tmp_path / name)
    volume = read_volume(tmp_path)
    assert volume.array.shape == (1, 1, 64, 64)
    np.testing.assert_array_equal(volume.array[0, 0], plain)
    np.testing.assert_array_equal(plain, pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array)


def test_undecodable_transfer_syntax_names_the_file_and_the_fix(tmp_path):
    source = Path(get_testdata_file("MR_small_jpeg_ls_lossless.dcm"))
    try:
        decodable = pydicom.dcmread(source).pixel_array is not None
    except (RuntimeError, NotImplementedError):
        decodable = False
    if decodable:
        pytest.skip("needs a transfer syntax that no installed decoder reads, but a JPEG-LS decoder is installed here")
    shutil.copy(source, tmp_path / "jls.dcm")
    with pytest.raises(DataError, match=r"(?s)jls\.dcm: cannot decode transfer syntax 'JPEG-LS.*pip install"):
        read_volume(tmp_path / "jls.dcm")


def test_shuffled_names_and_instance_numbers_come_out_in_position_order(tmp_path):
    volume = volume_i16()
    written = write_series(tmp_path / "series", volume, step=2.5, origin=(10.0, -20.0, -5.0))
    (tmp_path / "series" / "README.txt").write_text("not a DICOM file")
    out = read_volume(tmp_path / "series")
    np.testing.assert_array_equal(out.array[0], volume)
    assert out.array.dtype == np.int16 and out.meta["rescale"] == (1.0, 0.0)
    assert out.meta["files"] == [p.name for p in written["paths"]]
    assert out.meta["files"] != sorted(out.meta["files"])  # the name order would be wrong
    assert out.meta["instance_numbers"] != sorted(out.meta["instance_numbers"])  # and so would InstanceNumber
    assert out.meta["spacing"] == pytest.approx((2.5, 0.7, 0.8))
    assert out.meta["orientation"] == "SPL"  # axial: rows towards posterior, columns towards the left
    assert out.meta["skipped"] == {"not DICOM": 1} and out.meta["skipped_files"] == ["README.txt"]


@pytest.mark.filterwarnings("ignore:The value length")  # pydicom, writing 1.7e308 as a decimal string
@pytest.mark.parametrize("z, spacing, outcome", [
    ((-1.7e308, 1.7e308), (1.0, 1.0), "give no usable slice geometry"),  # was LinAlgError from the SVD
    ((0.0, 1.0), (0.0, 0.0), "PixelSpacing (0.0, 0.0) is not a positive size"),  # was a TypeError in join
    ((0.0, 1.0), (-1.0, 1e308), "PixelSpacing (-1.0, 1e+308) is not a positive size"),
])
def test_absurd_dicom_geometry_is_an_error_or_a_note(tmp_path, z, spacing, outcome):
    uid = generate_uid()
    for i, depth in enumerate(z):
        write_dicom_slice(tmp_path / f"s{i}.dcm", np.full((4, 4), i, np.int16), series_uid=uid,
                          position=(0.0, 0.0, depth), orientation=(1, 0, 0, 0, 1, 0), instance=i + 1,
                          spacing=spacing)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no numpy overflow chatter on the user's terminal
        if "geometry" in outcome:
            with pytest.raises(DataError, match=rf"^{tmp_path}: ImagePositionPatient .* {outcome}"):
                read_volume(tmp_path)
            return
        volume = read_volume(tmp_path)
    assert any(outcome in note for note in volume.meta["notes"])
    assert volume.meta["spacing"] == (1.0, 1.0, 1.0) and not volume.meta["spacing_known"]
    assert volume.meta["orientation"] == "SPL"  # still known (slices, rows, columns): not from the spacing


def test_oblique_series_orders_along_its_normal_and_maps_indices_to_patient_space(tmp_path):
    # Oblique sagittal: the normal points right, a little anterior and inferior, so neither the z nor the
    # x coordinate of ImagePositionPatient alone gives the slice order.
    yaw, tilt = np.deg2rad(30), np.deg2rad(20)
    row = (np.sin(yaw), np.cos(yaw), 0.0)
    col = tuple(np.cos(tilt) * np.array([0, 0, -1.0]) + np.sin(tilt) * np.array([np.cos(yaw), -np.sin(yaw), 0]))
    volume = volume_i16((7, 9, 11), seed=3)
    slopes = [0.5, 0.5, 2.0, 0.5, 1.0, 0.5, 0.25]  # per-slice scaling, as some scanners write
    written = write_series(tmp_path / "oblique", volume, step=1.7, orientation=row + col,
                           origin=(-30.0, 12.0, 55.0), slopes=slopes, intercept=-100.0)
    out = read_dicom_series(tmp_path / "oblique")
    assert out.array.dtype == np.float32 and out.meta["rescale"] == "per slice"
    np.testing.assert_allclose(out.array[0], volume * np.array(slopes)[:, None, None] - 100.0)
    assert out.meta["spacing"] == pytest.approx((1.7, 0.7, 0.8), abs=1e-6)
    assert out.meta["orientation"] == "RIP"  # slices towards the right, rows inferior, columns posterior
    # index (d, h, w) -> RAS mm: slice d's ImagePositionPatient, plus h rows down the column direction (0.7 mm)
    # and w columns along the row direction (0.8 mm); DICOM is LPS, so x and y change sign
    ds = pydicom.dcmread(written["paths"][4], stop_before_pixels=True)
    lps = np.array([float(v) for v in ds.ImagePositionPatient]) + 2 * 0.7 * np.array(col) + 3 * 0.8 * np.array(row)
    np.testing.assert_allclose(out.meta["affine"] @ [4, 2, 3, 1], [-lps[0], -lps[1], lps[2], 1], atol=1e-6)


def test_missing_slice_is_a_gap_error_naming_the_position(tmp_path):
    written = write_series(tmp_path / "gap", volume_i16((8, 6, 6)), step=2.5, origin=(0.0, 0.0, 0.0))
    written["paths"][5].unlink()
    before, after = written["paths"][4].name, written["paths"][6].name
    with pytest.raises(DataError, match=rf"{before} \(10\.000 mm\) and {after} \(15\.000 mm\): 1 slice\(s\) "
                                        r"missing at position\(s\) 12\.500 mm"):
        read_volume(tmp_path / "gap")


def test_two_series_in_one_folder_need_series_uid(tmp_path):
    first = write_series(tmp_path / "mixed", volume_i16((4, 6, 6), seed=1), seed=1)
    second_volume = volume_i16((3, 6, 6), seed=2)
    second = write_series(tmp_path / "mixed", second_volume, seed=2, origin=(0, 0, 100.0))
    with pytest.raises(DataError, match="mixes 2 DICOM series") as caught:
        read_volume(tmp_path / "mixed")
    assert first["uid"] in str(caught.value) and second["uid"] in str(caught.value)
    chosen = read_volume(tmp_path / "mixed", series_uid=second["uid"])
    np.testing.assert_array_equal(chosen.array[0], second_volume)
    with pytest.raises(DataError, match="no series with SeriesInstanceUID 1.2.3"):
        read_volume(tmp_path / "mixed", series_uid="1.2.3")


def test_file_without_pixel_data_or_of_another_size_or_truncated_is_named(tmp_path):
    written = write_series(tmp_path / "nopix", volume_i16((4, 6, 6)))
    victim = written["paths"][2]
    ds = pydicom.dcmread(victim)
    del ds.PixelData
    ds.save_as(victim)
    with pytest.raises(DataError, match=rf"{victim.name}: the file has an image header but no pixel data"):
        read_volume(tmp_path / "nopix")
    written = write_series(tmp_path / "sizes", volume_i16((4, 6, 6)))
    odd = written["paths"][1]
    ds = pydicom.dcmread(odd)
    write_slice(odd, np.zeros((5, 6), np.int16), series_uid=written["uid"], position=ds.ImagePositionPatient,
                orientation=ds.ImageOrientationPatient, instance=1)
    with pytest.raises(DataError, match=rf"differ in size.*{odd.name} is \(5, 6, 1\)"):
        read_volume(tmp_path / "sizes")
    (tmp_path / "cut").mkdir()
    shutil.copy(get_testdata_file("MR_truncated.dcm"), tmp_path / "cut" / "MR_truncated.dcm")
    with pytest.raises(DataError, match=r"MR_truncated\.dcm: pixel data is truncated or corrupt"):
        read_volume(tmp_path / "cut")


def test_each_dicom_file_is_read_once(tmp_path, monkeypatch):
    volume = volume_i16((5, 6, 6), seed=5)
    write_series(tmp_path / "series", volume)
    (tmp_path / "series" / "notes.txt").write_text("not DICOM")
    reads, real_dcmread, real_read_bytes = Counter(), pydicom.dcmread, Path.read_bytes

    def dcmread(source, *args, **kwargs):
        if isinstance(source, (str, Path)):  # a file read by pydicom (bytes already in memory do not count)
            reads[Path(source).name] += 1
        return real_dcmread(source, *args, **kwargs)

    def read_bytes(path):
        reads[path.name] += 1
        return real_read_bytes(path)

    monkeypatch.setattr(pydicom, "dcmread", dcmread)
    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    np.testing.assert_array_equal(read_volume(tmp_path / "series").array[0], volume)
    assert len(reads) == 6 and set(reads.values()) == {1}, reads  # headers and pixels come from one read


def test_short_series_with_a_missing_slice_is_a_gap_not_a_shorter_volume(tmp_path):
    written = write_series(tmp_path / "short", volume_i16((4, 6, 6)), step=1.0)
    written["paths"][2].unlink()  # positions 0, 1, 3 mm: the median step (1.5 mm) spans the gap
    with pytest.raises(DataError, match=r"1 slice\(s\) missing at position\(s\) 2\.000 mm"):
        read_volume(tmp_path / "short")


def drop_tags(path: Path, *names: str) -> None:
    ds = pydicom.dcmread(path)
    for name in names:
        delattr(ds, name)
    ds.save_as(path)


@pytest.mark.parametrize("names, message", [
    (("PixelData",), "the file has an image header but no pixel data"),
    (("Rows",), "no Rows tag, so the image size is unknown, yet it has pixel data"),
    (("Columns",), "no Columns tag, .* yet it has pixel data"),
    (("Rows", "Columns", "PixelData"), r"no Rows and Columns tag, .* yet it has image tags \(PhotometricInterp"),
    (("SeriesInstanceUID",), "1 of 4 image files lack SeriesInstanceUID"),
    (("ImagePositionPatient", "InstanceNumber"), "lack ImagePositionPatient/ImageOrientationPatient"),
])
def test_dicom_file_missing_a_tag_is_a_data_error_naming_the_file_and_the_tag(tmp_path, names, message):
    written = write_series(tmp_path / "series", volume_i16((4, 6, 6)))
    victim = written["paths"][3]  # the last slice: skipping it would leave a shorter volume and no gap
    drop_tags(victim, *names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the incomplete file; the error is what counts
        with pytest.raises(DataError, match=message) as caught:
            read_volume(tmp_path / "series")
    assert victim.name in str(caught.value)


def test_lone_dicom_file_without_series_uid_reads_and_bad_files_are_named(tmp_path):
    (tmp_path / "one").mkdir()
    pixels = volume_i16((1, 6, 6))[0]
    write_slice(tmp_path / "one" / "a.dcm", pixels, series_uid="1.2.3", position=(0, 0, 0),
                orientation=(1, 0, 0, 0, 1, 0), instance=1)
    drop_tags(tmp_path / "one" / "a.dcm", "SeriesInstanceUID")
    np.testing.assert_array_equal(read_volume(tmp_path / "one" / "a.dcm").array[0, 0], pixels)
    written = write_series(tmp_path / "series", volume_i16((3, 6, 6)))
    (tmp_path / "series" / "IM0009").write_bytes(b"")
    with pytest.raises(DataError, match=r"IM0009: empty file \(0 bytes\)"):
        read_volume(tmp_path / "series")
    (tmp_path / "series" / "IM0009").unlink()
    written["paths"][0].write_bytes(b"\x00" * 300)
    with pytest.raises(DataError, match=rf"{written['paths'][0].name}: named like a DICOM file but not one.*force=True"):
        read_volume(tmp_path / "series")
    write_series(tmp_path / "flat", volume_i16((3, 6, 6)), orientation=(1, 0, 0, 2, 0, 0))
    with pytest.raises(DataError, match=r"ImageOrientationPatient of im\d+\.dcm .* not two perpendicular unit"):
        read_volume(tmp_path / "flat")


def test_missing_position_tags_fall_back_to_instance_number_with_a_warning(tmp_path):
    volume = volume_i16((5, 6, 6), seed=4)
    folder = tmp_path / "noposition"
    folder.mkdir()
    uid = generate_uid()
    for index, number in enumerate((3, 1, 5, 2, 4)):  # file names disagree with InstanceNumber
        write_slice(folder / f"f{index}.dcm", volume[number - 1], series_uid=uid, instance=number)
    with pytest.warns(UserWarning, match="5 of 5 file.*ordered by InstanceNumber"):
        out = read_volume(folder)
    np.testing.assert_array_equal(out.array[0], volume)
    assert out.meta["ordered_by"] == "InstanceNumber" and out.meta["missing_position_tags"] == 5
    assert not out.meta["spacing_known"] and out.meta["orientation"] is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a complete series must not warn
        write_series(tmp_path / "complete", volume)
        read_volume(tmp_path / "complete")


# ----------------------------------------------------------------------------- TIFF

def need_tifffile():
    """tifffile, or a skip: it is an optional dependency of the TIFF reader."""
    return pytest.importorskip("tifffile", reason="tifffile is not installed (pip install tifffile)")


def test_tiff_reader_without_tifffile_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tifffile", None)  # makes `import tifffile` fail
    (tmp_path / "a.tif").write_bytes(b"II*\x00")
    with pytest.raises(DataError, match="pip install tifffile"):
        read_volume(tmp_path / "a.tif")


def test_tiff_stack_of_1000_pages_round_trips(tmp_path):
    tifffile = need_tifffile()
    stack = np.random.default_rng(0).integers(0, 65535, (1000, 32, 32)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    slices = read_volume(tmp_path / "stack.tif")
    assert slices.array.shape == (1000, 32, 32) and slices.spatial_dims == 2  # 2.5D: pages are channels
    np.testing.assert_array_equal(slices.array, stack)
    volume = read_tiff(tmp_path / "stack.tif", as_volume=True)
    assert volume.array.shape == (1, 1000, 32, 32) and volume.spatial_dims == 3
    np.testing.assert_array_equal(volume.array[0], stack)
    for page in stack[:3]:  # pages appended one by one, no shape metadata
        tifffile.imwrite(tmp_path / "appended.tif", page, append=True, metadata=None)
    np.testing.assert_array_equal(read_volume(tmp_path / "appended.tif").array, stack[:3])


def test_tiff_rgb_pages_spacing_and_damage(tmp_path):
    tifffile = need_tifffile()
    rgb = np.random.default_rng(1).integers(0, 255, (4, 10, 12, 3)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "rgb1.tif", rgb[0])
    np.testing.assert_array_equal(read_volume(tmp_path / "rgb1.tif").array, rgb[0].transpose(2, 0, 1))
    tifffile.imwrite(tmp_path / "rgb4.tif", rgb)
    np.testing.assert_array_equal(read_tiff(tmp_path / "rgb4.tif", as_volume=True).array, rgb.transpose(3, 0, 1, 2))
    assert read_tiff(tmp_path / "rgb4.tif").array.shape == (12, 10, 12)  # pages x samples as channels
    stack = np.zeros((5, 8, 8), np.uint16)
    tifffile.imwrite(tmp_path / "ij.tif", stack, imagej=True, resolution=(1 / 0.5, 1 / 0.25),
                     metadata={"spacing": 2.0, "unit": "um", "axes": "ZYX"})
    ij = read_tiff(tmp_path / "ij.tif", as_volume=True)
    assert ij.meta["spacing"] == pytest.approx((0.002, 0.00025, 0.0005)) and ij.meta["spacing_known"]
    pages = np.random.default_rng(2).integers(0, 1000, (10, 64, 64)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "zlib.tif", pages, compression="zlib", rowsperstrip=8)
    raw = (tmp_path / "zlib.tif").read_bytes()
    (tmp_path / "tail.tif").write_bytes(raw[:-50])  # the last page's strips run past the end of the file
    with pytest.raises(DataError, match=r"tail\.tif: truncated TIFF, page 9 needs bytes"):
        read_volume(tmp_path / "tail.tif")
    (tmp_path / "cut.tif").write_bytes(raw[: len(raw) * 7 // 10])  # tifffile alone would return page 1 only
    with pytest.raises(DataError, match=r"cut\.tif: damaged TIFF, truncated or corrupt \(.*invalid page offset"):
        read_volume(tmp_path / "cut.tif")
    (tmp_path / "junk.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(DataError, match=r"junk\.tif: not a readable TIFF"):
        read_volume(tmp_path / "junk.tif")
    floats = np.ones((3, 8, 8), np.float32)
    floats[2, 1, 1] = np.inf
    tifffile.imwrite(tmp_path / "inf.tif", floats, photometric="minisblack")
    with pytest.raises(DataError, match=r"inf\.tif: 1 non-finite"):
        read_volume(tmp_path / "inf.tif")


# ----------------------------------------------------------------------------- NumPy

def memmap_backed(array: np.ndarray) -> bool:
    while array is not None:
        if isinstance(array, np.memmap):
            return True
        array = array.base
    return False


def test_npy_channels_last_is_a_zero_copy_view_of_the_memmap(tmp_path):
    hwc = np.random.default_rng(0).random((20, 16, 5)).astype(np.float32)
    np.save(tmp_path / "hwc.npy", hwc)
    out = read_volume(tmp_path / "hwc.npy", channel_axis=-1)
    np.testing.assert_array_equal(out.array, hwc.transpose(2, 0, 1))
    assert out.array.shape == (5, 20, 16) and memmap_backed(out.array)  # no copy was made
    copied = read_npy(tmp_path / "hwc.npy", channel_axis=-1, contiguous=True)
    assert copied.array.flags.c_contiguous and not memmap_backed(copied.array)
    np.testing.assert_array_equal(copied.array, out.array)
    # 1000 x 256 x 256 opens without being read: open_memmap leaves a sparse file, the reader maps it
    big = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.uint8, shape=(1000, 256, 256))
    del big
    stack = read_volume(tmp_path / "big.npy")
    assert stack.array.shape == (1000, 256, 256) and memmap_backed(stack.array) and stack.array.flags.c_contiguous
    np.save(tmp_path / "plain.npy", np.arange(12).reshape(3, 4))
    assert read_volume(tmp_path / "plain.npy").array.shape == (1, 3, 4)  # 2-D: one channel


def test_npz_key_nonfinite_and_damaged_numpy_files(tmp_path):
    np.savez(tmp_path / "two.npz", image=np.zeros((2, 4, 4, 4), np.int16), mask=np.ones((4, 4, 1), np.uint8))
    with pytest.raises(DataError, match=r"two\.npz: holds 2 arrays \(image, mask\); pass key="):
        read_volume(tmp_path / "two.npz")
    assert read_volume(tmp_path / "two.npz", key="image").array.shape == (2, 4, 4, 4)
    assert read_npz(tmp_path / "two.npz", key="mask", channel_axis=-1).array.shape == (1, 4, 4)
    with pytest.raises(DataError, match="Did you mean: image"):
        read_volume(tmp_path / "two.npz", key="imag")
    np.savez_compressed(tmp_path / "one.npz", np.zeros((3, 5, 5), np.float32))
    assert read_volume(tmp_path / "one.npz").meta["key"] == "arr_0"
    bad = np.zeros((2, 6, 6), np.float64)
    bad[1, 2, 3] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(DataError, match=r"nan\.npy: 1 non-finite value.*\(1, 2, 3\)"):
        read_volume(tmp_path / "nan.npy")
    np.save(tmp_path / "full.npy", np.zeros((4, 64, 64), np.float32))
    raw = (tmp_path / "full.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"cut\.npy: not a readable \.npy file, truncated"):
        read_volume(tmp_path / "cut.npy")
    (tmp_path / "cut.npz").write_bytes((tmp_path / "two.npz").read_bytes()[:200])
    with pytest.raises(DataError, match=r"cut\.npz: not a readable \.npz"):
        read_volume(tmp_path / "cut.npz")
    np.save(tmp_path / "five.npy", np.zeros((1, 2, 3, 4, 5), np.uint8))
    with pytest.raises(DataError, match="not an image"):
        read_volume(tmp_path / "five.npy")


# ----------------------------------------------------------------------------- hostile headers

def test_header_claiming_a_huge_array_is_refused_before_anything_is_allocated(tmp_path, monkeypatch):
    header = nib.Nifti1Header()
    header.set_data_shape((30000, 30000, 30000))  # 54 TB of int16 behind a 400-byte file
    header.set_data_dtype(np.int16)
    stream = io.BytesIO()
    header.write_to(stream)
    raw = stream.getvalue().ljust(int(header["vox_offset"]), b"\0") + bytes(64)
    (tmp_path / "bomb.nii").write_bytes(raw)
    (tmp_path / "bomb.nii.gz").write_bytes(gzip.compress(raw))
    for name in ("bomb.nii", "bomb.nii.gz"):
        with pytest.raises(DataError, match=rf"{name}: the header claims shape \(30000, 30000, 30000\).*bomb"):
            read_volume(tmp_path / name)
    header.set_data_shape((2000, 2000, 200))  # 1.6 GB: under the limit, but no small file can hold it
    stream = io.BytesIO()
    header.write_to(stream)
    raw = stream.getvalue().ljust(int(header["vox_offset"]), b"\0") + bytes(64)
    (tmp_path / "short.nii").write_bytes(raw)
    (tmp_path / "short.nii.gz").write_bytes(gzip.compress(raw))
    for name in ("short.nii", "short.nii.gz"):  # refused at once, before nibabel allocates 1.6 GB
        with pytest.raises(DataError, match=rf"{name}: the header claims 1,600,000,000 bytes of voxels"):
            read_volume(tmp_path / name)
    monkeypatch.setattr(readers_base, "MAX_ARRAY_BYTES", 1000)  # small files stand in for bombs
    write_slice(tmp_path / "wide.dcm", volume_i16((1, 6, 6))[0], series_uid="1.2.3")
    ds = pydicom.dcmread(tmp_path / "wide.dcm")
    ds.Rows = ds.Columns = 500  # checked before pydicom would compare the size with the pixel data
    ds.save_as(tmp_path / "wide.dcm")
    with pytest.raises(DataError, match=r"wide\.dcm: the header claims 1 slice\(s\) of Rows=500"):
        read_volume(tmp_path / "wide.dcm")
    np.savez_compressed(tmp_path / "zeros.npz", image=np.zeros((2, 40, 40), np.uint8))
    with pytest.raises(DataError, match=r"zeros\.npz: the header claims shape \(2, 40, 40\) of uint8 in array "
                                        r"'image'"):
        read_volume(tmp_path / "zeros.npz")
    tifffile = need_tifffile()
    tifffile.imwrite(tmp_path / "zeros.tif", np.zeros((2, 40, 40), np.uint8), compression="zlib")
    with pytest.raises(DataError, match=r"zeros\.tif: the header claims series shape \(2, 40, 40\)"):
        read_volume(tmp_path / "zeros.tif")


@pytest.mark.parametrize("allocated, stored, signed, implicit", [
    (16, 16, 1, False), (16, 12, 1, False), (16, 12, 0, False), (16, 12, 1, True),
    (8, 8, 0, False), (8, 7, 1, True), (32, 32, 1, False), (32, 20, 0, True),
])
def test_uncompressed_pixels_read_straight_from_the_bytes_match_pydicom(tmp_path, allocated, stored, signed,
                                                                        implicit):
    """The fast path (no pydicom pixel handler) masks unused bits or sign-extends into them as pydicom does."""
    from pydicom.uid import ImplicitVRLittleEndian

    dtype = np.dtype(f"<{'i' if signed else 'u'}{allocated // 8}")
    rng = np.random.default_rng(allocated + stored)
    folder = tmp_path / "series"
    paths = write_series(folder, volume_i16((3, 5, 7)))["paths"]  # in slice order
    expected = []
    for path in paths:
        ds = pydicom.dcmread(path)
        raw = rng.integers(np.iinfo(dtype).min, np.iinfo(dtype).max, (5, 7), dtype=dtype, endpoint=True)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = allocated, stored, stored - 1, signed
        ds.PixelData = raw.tobytes()  # every unused high bit set at random: the masking must show
        if implicit:
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        ds.save_as(path, implicit_vr=implicit, little_endian=True, enforce_file_format=True)
        expected.append(pydicom.dcmread(path).pixel_array)
    volume = read_volume(folder)
    assert volume.array.dtype == expected[0].dtype
    np.testing.assert_array_equal(volume.array[0], np.stack(expected))
    if stored < allocated:  # the draw touched the unused bits, so pydicom's correction changed values
        assert not np.array_equal(np.stack(expected), np.stack([np.frombuffer(pydicom.dcmread(p).PixelData, dtype, 35)
                                                                .reshape(5, 7) for p in paths]))


def test_uncompressed_series_never_calls_pydicom_pixel_handlers(tmp_path, monkeypatch):
    volume = volume_i16((4, 6, 5), seed=2)
    write_series(tmp_path / "series", volume)

    def refuse(self):
        raise AssertionError("pixel_array called on an uncompressed little-endian file")

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(refuse))
    np.testing.assert_array_equal(read_volume(tmp_path / "series").array[0], volume)


def test_dicom_folder_lists_subfolders_links_and_pipes_it_did_not_read(tmp_path):
    volume = volume_i16((3, 4, 4), seed=3)
    write_series(tmp_path / "series", volume)
    (tmp_path / "series" / "extra").mkdir()
    (tmp_path / "series" / "gone.dcm").symlink_to(tmp_path / "nowhere.dcm")
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "series" / "pipe.dcm")  # reading it would block forever
    out = read_volume(tmp_path / "series")
    np.testing.assert_array_equal(out.array[0], volume)
    assert out.meta["skipped"]["subfolder (not searched)"] == 1
    odd = out.meta["skipped"]["not a regular file (pipe, socket or broken link)"]
    assert odd == (2 if hasattr(os, "mkfifo") else 1)
    assert {"extra", "gone.dcm"} <= set(out.meta["skipped_files"])


def test_series_the_test_compresses_with_rle_reads_like_the_uncompressed_one(tmp_path):
    """pydicom encodes RLE Lossless itself: the test writes a compressed series, the reader decodes it."""
    from pydicom.uid import RLELossless

    volume = volume_i16((4, 6, 5), seed=4)
    written = write_series(tmp_path / "series", volume)
    for path in written["paths"]:
        ds = pydicom.dcmread(path)
        ds.compress(RLELossless)
        ds.save_as(path, enforce_file_format=True)
    assert pydicom.dcmread(written["paths"][0]).file_meta.TransferSyntaxUID == RLELossless
    out = read_volume(tmp_path / "series")
    np.testing.assert_array_equal(out.array[0], volume)
    assert out.meta["transfer_syntaxes"] == ["RLE Lossless"]


def test_predict_lists_every_format_the_readers_read(tmp_path):
    """One table of formats: what `medzoo predict` picks up is what the readers read (`.dicom` included)."""
    from medzoo.datasets.readers.registry import DICOM_SUFFIXES, READERS, reader_for, volume_suffixes
    from medzoo.engine.inference import list_inputs

    files = [tmp_path / f"volume{index}{suffix}" for index, suffix in enumerate(volume_suffixes())
             if suffix not in DICOM_SUFFIXES]
    for path in files:
        path.write_bytes(b"x")
    series = tmp_path / "series"
    series.mkdir()
    (series / "slice1.dicom").write_bytes(b"x")
    assert set(list_inputs(tmp_path)) == {*files, series}
    assert reader_for(series / "slice1.dicom") is READERS["dicom"]

"""The fast DICOM element parser against pydicom's own reader, file by file."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ImplicitVRLittleEndian, RLELossless

import medzoo.datasets.readers.dicom_file as dicom_file
from medzoo.datasets.readers import read_volume
from medzoo.datasets.readers.dicom_native import read_native
from tests.dicom_builders import write_dicom_series, write_dicom_slice

PYDICOM_FILES = Path(get_testdata_file("MR_small.dcm")).parent  # the files inside pydicom's wheel
REAL_SERIES = Path(__file__).resolve().parents[2] / "shared" / "data" / "volumes" / "dicom" / "SAG-anon-128"


def raw(ds: Dataset) -> dict:
    """Each element as read: raw (header facts and bytes), or as converted while reading (the charset)."""
    return {tag: (e.VR, e.length, e.value, e.value_tell, e.is_implicit_VR, e.is_little_endian)
            if isinstance(e, RawDataElement) else ("converted", e.VR, e.value) for tag, e in ds._dict.items()}


def assert_as_pydicom_reads(path: Path) -> bool:
    """True when the fast parser took the file (and gave pydicom's dataset), False when it left it to pydicom."""
    data = path.read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            reference = pydicom.dcmread(path)
        except Exception:
            assert read_native(data, path) is None, f"{path}: pydicom refuses it, the fast parser must too"
            return False
        fast = read_native(data, path)
        if fast is None:
            return False
        assert raw(fast) == raw(reference), path
        # pydicom converts group 0002 as it reads it; the fast parser leaves it raw, converted when first used
        assert list(fast.file_meta.keys()) == list(reference.file_meta.keys()), path
        assert fast.file_meta == reference.file_meta, path
        assert fast.original_encoding == reference.original_encoding, path
        assert fast.original_character_set == reference.original_character_set, path
        assert fast.preamble == reference.preamble and fast.filename == reference.filename, path
        assert fast == reference, path  # every value converted, by pydicom, on both sides
    return True


def test_every_file_in_pydicoms_wheel_parses_as_pydicom_reads_it_or_is_left_to_pydicom():
    files = [p for p in sorted(PYDICOM_FILES.rglob("*")) if p.is_file() and p.stat().st_size < 64 * 2**20]
    taken = [path.name for path in files if assert_as_pydicom_reads(path)]
    assert len(files) > 50 and len(taken) >= 20, taken  # the fast path is not a no-op
    assert "MR_small.dcm" in taken  # explicit VR little endian
    assert "CT_small.dcm" in taken  # with a charset and private tags


def test_files_it_leaves_to_pydicom():
    # big endian, RLE, JPEG, JPEG 2000 (with a sequence delimiter inside its fragments): not for this parser
    names = ("MR_small_bigendian.dcm", "MR_small_RLE.dcm", "JPEG-lossy.dcm", "JPEG2000-embedded-sequence-delimiter.dcm")
    present = [PYDICOM_FILES / name for name in names if (PYDICOM_FILES / name).is_file()]
    assert len(present) >= 2, f"expected some of {names} in pydicom's wheel"
    for path in present:
        assert read_native(path.read_bytes(), path) is None, path.name


def test_written_files_implicit_explicit_sequences_and_truncation(tmp_path):
    pixels = np.arange(20, dtype=np.int16).reshape(4, 5)
    plain = tmp_path / "plain.dcm"
    write_dicom_slice(plain, pixels, series_uid="1.2.3", position=(0, 0, 1), orientation=(1, 0, 0, 0, 1, 0),
                      instance=1, slope=2.0, intercept=-3.0)
    assert assert_as_pydicom_reads(plain)

    ds = pydicom.dcmread(plain)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Müller^Jörg"
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    implicit = tmp_path / "implicit.dcm"
    ds.save_as(implicit, implicit_vr=True, little_endian=True)
    assert assert_as_pydicom_reads(implicit)
    assert read_native(implicit.read_bytes(), implicit).PatientName == "Müller^Jörg"

    item = Dataset()
    item.ReferencedSOPInstanceUID = "1.2.3.4"
    ds = pydicom.dcmread(plain)
    ds.ReferencedImageSequence = Sequence([item])
    sequence = tmp_path / "sequence.dcm"
    ds.save_as(sequence)  # a defined-length sequence: raw bytes, converted when used, as pydicom does
    assert assert_as_pydicom_reads(sequence)
    assert read_native(sequence.read_bytes(), sequence).ReferencedImageSequence[0].ReferencedSOPInstanceUID == "1.2.3.4"
    ds["ReferencedImageSequence"].is_undefined_length = True
    ds.save_as(sequence)  # an undefined length (items up to a delimiter): left to pydicom
    assert read_native(sequence.read_bytes(), sequence) is None
    assert pydicom.dcmread(sequence).ReferencedImageSequence[0].ReferencedSOPInstanceUID == "1.2.3.4"

    data = plain.read_bytes()
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(data[: len(data) - 7])
    assert read_native(truncated.read_bytes(), truncated) is None



@pytest.mark.skipif(not REAL_SERIES.is_dir(), reason=f"real DICOM series not found at {REAL_SERIES}")
def test_the_real_series_parses_as_pydicom_reads_it():
    files = [p for p in sorted(REAL_SERIES.iterdir()) if p.suffix == ".dcm"]
    assert files and all(assert_as_pydicom_reads(path) for path in files)


def test_series_volumes_are_the_same_with_and_without_the_fast_parser(tmp_path, monkeypatch):
    volume = np.random.default_rng(0).integers(-500, 3000, (6, 8, 9)).astype(np.int16)
    write_dicom_series(tmp_path / "series", volume[::-1], step=-1.5)
    first = tmp_path / "series" / "slice0000.dcm"
    assert read_native(first.read_bytes(), first) is not None  # the fast parser really takes these files
    fast = read_volume(tmp_path / "series")
    monkeypatch.setattr(dicom_file, "NATIVE_READ_MAX", 0)
    slow = read_volume(tmp_path / "series")
    np.testing.assert_array_equal(fast.array, slow.array)
    assert fast.meta.keys() == slow.meta.keys()
    for key in fast.meta:
        np.testing.assert_equal(fast.meta[key], slow.meta[key])


def test_a_compressed_file_still_reads_through_pydicom(tmp_path):
    source = PYDICOM_FILES / "MR_small_RLE.dcm"
    if not source.is_file():
        pytest.skip(f"pydicom's test file {source.name} is missing from this pydicom install ({source.parent})")
    ds = pydicom.dcmread(source)
    assert ds.file_meta.TransferSyntaxUID == RLELossless
    path = tmp_path / "rle.dcm"
    ds.save_as(path)
    assert read_native(path.read_bytes(), path) is None
    np.testing.assert_array_equal(read_volume(path).array[0, 0], pydicom.dcmread(PYDICOM_FILES / "MR_small.dcm").pixel_array)

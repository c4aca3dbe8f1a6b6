"""Builders of synthetic medical files for tests and benchmarks (never used by training itself)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def write_dicom_slice(path: Path, pixels: np.ndarray, *, series_uid: str, position: Sequence[float] | None = None,
                      orientation: Sequence[float] | None = None, instance: int | None = None,
                      spacing: Sequence[float] = (1.0, 1.0), slope: float = 1.0, intercept: float = 0.0,
                      with_pixels: bool = True) -> None:
    """One single-frame MR DICOM file (explicit VR little endian, signed 16-bit)."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = "MR", series_uid, 1, "synthetic"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelSpacing = [f"{s:g}" for s in spacing]
    if orientation is not None:
        ds.ImageOrientationPatient = [f"{v:.10f}" for v in orientation]
    if position is not None:
        ds.ImagePositionPatient = [f"{v:.10f}" for v in position]
    if instance is not None:
        ds.InstanceNumber = instance
    if (slope, intercept) != (1.0, 0.0):
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
    if with_pixels:
        ds.PixelData = pixels.astype("<i2").tobytes()
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


def write_dicom_series(folder: Path, volume: np.ndarray, *, step: float = 1.0, spacing: Sequence[float] = (1.0, 1.0),
                       name: str = "slice{index:04d}.dcm") -> str:
    """`volume` (D, H, W) as one axial file per slice, `step` mm apart; returns the SeriesInstanceUID."""
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    uid = generate_uid()
    for index, pixels in enumerate(volume):
        write_dicom_slice(folder / name.format(index=index), pixels, series_uid=uid, position=(0.0, 0.0, step * index),
                          orientation=(1, 0, 0, 0, 1, 0), instance=index + 1, spacing=spacing)
    return uid

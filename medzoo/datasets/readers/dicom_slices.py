"""The facts of each file of a DICOM folder (`_Slice`): size, geometry, rescale and series, then its pixels.

A series repeats most header values in every file, so each distinct raw value of a tag is converted once per
read (`_TagValues`); uncompressed little-endian pixels are viewed straight from the file's bytes
(`_NativeFormat`), other transfer syntaxes go through `Dataset.pixel_array` (`_pixels`).
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from medzoo.datasets.readers.dicom_file import PIXEL_DATA, _read_file
from medzoo.datasets.readers.registry import DICOM_SUFFIXES
from medzoo.errors import DataError

PIXEL_ELEMENTS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# A file with one of these suffixes (DICOM_SUFFIXES) that is not DICOM is an error, not a skipped stray file.
# Tags of the image pixel and image plane modules: a file holding any of them is an image, even when cut short.
IMAGE_TAGS = ("PhotometricInterpretation", "SamplesPerPixel", "BitsAllocated", "PixelSpacing", "ImagePositionPatient",
              "ImageOrientationPatient")
# Transfer syntaxes whose pixel data is the plain little-endian array once read (a deflated file is inflated whole).
NATIVE_LITTLE_ENDIAN = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian)
NATIVE_DTYPES = {(8, 0): "u1", (8, 1): "i1", (16, 0): "<u2", (16, 1): "<i2", (32, 0): "<u4", (32, 1): "<i4"}


@dataclass(frozen=True)
class _NativeFormat:
    """How to view uncompressed little-endian pixel data as an array without pydicom's pixel handlers."""

    dtype: str
    bits_stored: int

    def view(self, data: bytes, rows: int, cols: int) -> np.ndarray:
        """The pixels as pydicom decodes them: unused high bits masked off, or the sign extended into them."""
        pixels = np.frombuffer(data, self.dtype, count=rows * cols).reshape(rows, cols)
        spare = pixels.dtype.itemsize * 8 - self.bits_stored
        if not spare:
            return pixels  # a read-only view of the file's bytes: copied once, into the volume
        pixels = pixels.copy()
        if pixels.dtype.kind == "i":  # arithmetic shifts carry bit `bits_stored - 1` into the unused bits
            np.left_shift(pixels, spare, out=pixels)
            np.right_shift(pixels, spare, out=pixels)
        else:
            np.bitwise_and(pixels, (1 << self.bits_stored) - 1, out=pixels)
        return pixels


class _TagValues:
    """Tag values of the files of one read, each distinct raw value converted once.

    Converting raw elements (parsing 'DS' strings, decoding text) took about half as long as parsing the
    files themselves, and the files of a series repeat most values, so a value is looked up by its raw bytes
    and encoding first.
    """

    def __init__(self):
        self._converted: dict[tuple, object] = {}
        self._tags: dict[str, int] = {}

    def get(self, ds: Dataset, name: str, encoding: tuple):
        """The value of tag `name` in `ds` (None when absent); `encoding` is the file's (encoding, charset)."""
        tag = self._tags.get(name)
        if tag is None:
            tag = self._tags[name] = tag_for_keyword(name)
        element = ds.get_item(tag)
        if element is None:
            return None
        if not isinstance(element, RawDataElement):
            return element.value
        key = (tag, element.VR, element.value, encoding)
        value = self._converted.get(key, self)  # `self` marks a miss: None can be a converted value
        if value is self:
            value = self._converted[key] = ds[tag].value
        return value

    @staticmethod
    def encoding(ds: Dataset) -> tuple:
        """What besides the raw bytes decides a converted value: byte order, VR style and character set."""
        charset = ds.original_character_set
        if not isinstance(charset, str):
            try:
                charset = tuple(charset)
            except TypeError:  # an odd value from a damaged header: still a key, never an error here
                charset = repr(charset)
        return ds.original_encoding, charset


@dataclass
class _Slice:
    """One file, read once: the header facts needed to group, check and order it, and its dataset (pixels)."""

    path: Path
    series_uid: str | None
    shape: tuple[int, int, int]  # rows, columns, samples per pixel
    frames: int
    orientation: np.ndarray | None
    position: np.ndarray | None
    instance: int | None
    slope: float
    intercept: float
    pixel_spacing: tuple[float, float] | None
    series_number: str
    description: str
    modality: str
    transfer_syntax: str
    native: _NativeFormat | None  # set when the pixels can be viewed straight from the bytes
    dataset: Dataset | None  # released once its pixels are decoded


def _floats(value, count: int) -> np.ndarray | None:
    try:
        array = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return None
    return array if array.shape == (count,) and np.isfinite(array).all() else None


@dataclass
class _Header:
    """One read file's dataset, with tag reads that name the file when a value is unreadable."""

    ds: Dataset
    path: Path
    values: _TagValues

    def __post_init__(self):
        self.encoding = _TagValues.encoding(self.ds)

    def tag(self, name: str):
        """The value of tag `name`, None when absent or empty; a DataError when it is unreadable."""
        try:
            value = self.values.get(self.ds, name, self.encoding)
        except Exception as exc:  # values are decoded lazily, so corrupt bytes surface here
            raise DataError(f"{self.path}: DICOM tag {name} is unreadable ({type(exc).__name__}: {exc}); the file "
                            "is corrupt. Remove it from the series folder or replace it.") from exc
        return None if value is None or value == "" else value

    def number(self, name: str, kind: type, default: float | None):
        """Tag `name` as an int or float (`kind`), `default` when absent; a DataError when it is not a number."""
        value = self.tag(name)
        if value is None:
            return default
        try:
            number = kind(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise DataError(f"{self.path}: DICOM tag {name} holds {value!r}, not a number; the file is corrupt. "
                            "Remove it from the series folder or replace it.") from exc
        if not np.isfinite(number):
            raise DataError(f"{self.path}: DICOM tag {name} holds {value!r}, not a finite number.")
        return number


def _non_image_class(ds: Dataset) -> str | None:
    """The name of the file's SOP class when it is a known class that holds no image (a DICOMDIR, a report, a
    presentation state); None for image classes, unknown or unreadable ones."""
    meta = getattr(ds, "file_meta", None)
    for holder, tag in ((ds, "SOPClassUID"), (meta, "MediaStorageSOPClassUID")):
        try:
            uid = UID(str(holder.get(tag))) if holder is not None and tag in holder else None
        except Exception:  # a corrupt UID is no evidence either way
            continue
        if uid is not None and uid.name != str(uid) and "Image" not in uid.name:
            return uid.name
    return None


def _image_size(header: _Header, force: bool) -> tuple[int, int, int] | str:
    """(rows, columns, samples), or why a file without them is skipped (a DICOMDIR, a report, ...).

    A file without Rows/Columns is skipped only when it is a known non-image object (or, with `force`, a stray
    file without a DICOM suffix); otherwise it is a slice cut short, and skipping it would shorten the volume.
    """
    ds, path = header.ds, header.path
    rows, cols = header.number("Rows", int, None), header.number("Columns", int, None)
    if rows is not None and cols is not None:
        return _check_size((rows, cols, header.number("SamplesPerPixel", int, 1)), path)
    has_pixels = any(name in ds for name in PIXEL_ELEMENTS)
    image_tags = [tag for tag in IMAGE_TAGS if tag in ds]
    if not has_pixels and not image_tags:
        non_image = _non_image_class(ds)
        if non_image:
            return f"not an image ({non_image})"
        if force and path.suffix.lower() not in DICOM_SUFFIXES:
            return "not DICOM (no SOP class, read with force=True)"
    missing = " and ".join(name for name, value in (("Rows", rows), ("Columns", cols)) if value is None)
    evidence = ("it has pixel data" if has_pixels else f"it has image tags ({', '.join(image_tags)})" if image_tags
                else "it is no known non-image object (DICOMDIR, report, ...)")
    raise DataError(f"{path}: no {missing} tag, so the image size is unknown, yet {evidence}: the file was cut "
                    "short or is corrupt. Restore it, or remove it from the series folder.")


def _check_size(size: tuple[int, int, int], path: Path) -> tuple[int, int, int]:
    """`size` (rows, columns, samples) when it is possible; a DataError naming the file otherwise."""
    rows, cols, samples = size
    if rows <= 0 or cols <= 0 or samples not in (1, 3, 4):
        raise DataError(f"{path}: impossible image size Rows={rows}, Columns={cols}, SamplesPerPixel={samples}; "
                        "the header is corrupt. Re-export the file or remove it from the series folder.")
    return size


def _native_format(header: _Header, transfer: UID | None, shape: tuple[int, int, int]) -> _NativeFormat | None:
    """The plain array layout of the pixel data when the file is uncompressed little-endian single-sample data
    of a size that matches the header; None to leave decoding (and its checks and errors) to pydicom."""
    if transfer not in NATIVE_LITTLE_ENDIAN or shape[2] != 1 or "PixelData" not in header.ds:
        return None
    allocated, stored = header.number("BitsAllocated", int, None), header.number("BitsStored", int, None)
    dtype = NATIVE_DTYPES.get((allocated, header.number("PixelRepresentation", int, None)))
    if dtype is None or stored is None or not 0 < stored <= allocated \
            or header.number("HighBit", int, stored - 1) != stored - 1:
        return None
    try:
        length = len(header.ds.get_item(PIXEL_DATA).value)
    except Exception:  # a corrupt element: left to pydicom's decoder, whose error `_pixels` reports
        return None
    expected = shape[0] * shape[1] * allocated // 8
    if length != expected and length != expected + expected % 2:  # odd lengths are padded to even
        return None
    return _NativeFormat(dtype, stored)


def _slice(header: _Header, force: bool) -> _Slice | str:
    """The facts of one read file, or the reason it is skipped (not an image)."""
    shape = _image_size(header, force)
    if isinstance(shape, str):
        return shape
    spacing = header.tag("PixelSpacing") or header.tag("ImagerPixelSpacing")
    spacing = _floats(spacing, 2) if spacing is not None else None
    meta = getattr(header.ds, "file_meta", None)
    transfer = None if meta is None else header.values.get(meta, "TransferSyntaxUID", header.encoding)
    series_uid = header.tag("SeriesInstanceUID")
    return _Slice(
        path=header.path, series_uid=None if series_uid is None else str(series_uid), shape=shape,
        frames=header.number("NumberOfFrames", int, 1) or 1,
        orientation=_floats(header.tag("ImageOrientationPatient") or [], 6),
        position=_floats(header.tag("ImagePositionPatient") or [], 3),
        instance=header.number("InstanceNumber", int, None),
        slope=header.number("RescaleSlope", float, 1.0) or 1.0,
        intercept=header.number("RescaleIntercept", float, 0.0),
        pixel_spacing=None if spacing is None else (float(spacing[0]), float(spacing[1])),
        series_number=str(header.tag("SeriesNumber") or ""),
        description=str(header.tag("SeriesDescription") or ""),
        modality=str(header.tag("Modality") or ""),
        transfer_syntax=getattr(transfer, "name", None) or "unknown",
        native=_native_format(header, transfer, shape), dataset=header.ds)


def _scan(path: Path, force: bool) -> tuple[list[_Slice], dict[str, list[str]]]:
    """Read every file of the folder (or the one file) once; non-DICOM files are listed by skip reason."""
    folder = None if path.is_file() else path.resolve()
    files = [path] if folder is None else sorted(path.iterdir(), key=lambda file: file.name)
    slices, skipped, values = [], {}, _TagValues()
    for file in files:
        try:
            info = file.stat()  # one call for the type and the size (links followed)
        except OSError:
            info = None
        if info is not None and stat.S_ISDIR(info.st_mode):
            skipped.setdefault("subfolder (not searched)", []).append(file.name)
            continue
        if info is None or not stat.S_ISREG(info.st_mode):  # a FIFO would block the read; a dangling link
            skipped.setdefault("not a regular file (pipe, socket or broken link)", []).append(file.name)
            continue
        if folder is not None and file.is_symlink() and not file.resolve().is_relative_to(folder):
            # a series with a slice left out would be a wrong volume: refused, not skipped
            raise DataError(f"{file}: a symbolic link to {file.resolve()}, outside the series folder {path}; "
                            "links are not followed out of it. Copy the file into the folder (or remove the "
                            "link).")
        found = _read_file(file, info.st_size, force)
        if not isinstance(found, str):
            found = _slice(_Header(found, file, values), force)
        if isinstance(found, str):
            skipped.setdefault(found, []).append(file.name)
        else:
            slices.append(found)
    return slices, skipped


def _pixels(item: _Slice) -> np.ndarray:
    """Decode the pixels of a file already read by `_scan` (no second read of the file)."""
    ds = item.dataset
    if not any(name in ds for name in PIXEL_ELEMENTS):
        raise DataError(f"{item.path}: the file has an image header but no pixel data (no PixelData element). "
                        "Remove it from the series folder or replace it.")
    rows, cols, samples = item.shape
    try:
        if item.native is not None:
            return item.native.view(ds[PIXEL_DATA].value, rows, cols)
        pixels = ds.pixel_array
    except (NotImplementedError, RuntimeError, ImportError) as exc:
        raise DataError(f"{item.path}: cannot decode transfer syntax '{item.transfer_syntax}' ({exc}). Install "
                        "a decoder pydicom can use (pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg, "
                        "or one named above) or convert the series to an uncompressed one.") from exc
    except Exception as exc:  # corrupt bytes or group 0028 tags surface as many types inside pydicom
        raise DataError(f"{item.path}: pixel data is truncated or corrupt, or disagrees with the pixel "
                        f"description tags ({type(exc).__name__}: {exc}). Replace the file.") from exc
    expected = (rows, cols) if samples == 1 else (rows, cols, samples)
    if pixels.shape != expected:
        raise DataError(f"{item.path}: decoded pixel array has shape {pixels.shape}, header says {expected}.")
    return pixels

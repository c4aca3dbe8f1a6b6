"""A folder holding one DICOM series -> `(C, D, H, W)` (C = 1, or 3 for RGB), slices ordered in space.

D is the slice axis, ordered by position along the slice normal (the cross product of the
ImageOrientationPatient rows, dotted with ImagePositionPatient), never by file name or InstanceNumber;
H is the image rows, W the columns; `meta["spacing"]` is (slice step, row spacing, column spacing) in mm.
`meta["affine"]` maps an output index (d, h, w) to RAS+ millimetres and `meta["orientation"]` gives the
RAS+ axis code each output axis grows towards: the same conventions as the NIfTI reader, but the voxels are
left in acquisition order (not reoriented). RescaleSlope/RescaleIntercept are applied: the result is float32
when any slice has a slope other than 1 or an intercept other than 0, and the stored integer type otherwise.

Each file is read once: its header and pixel data come from the same read, and a plain Part 10 file in
little endian is parsed from its bytes by `dicom_native.read_native` into the dataset pydicom would build
(others through `pydicom.dcmread`; a deflated file is inflated here, never whole by pydicom, and only as far as
its own header describes, see DEFLATED_HEADER_BYTES). A series repeats most header
values in every file, so each distinct raw value of a tag is converted once per read (`_TagValues`), and
uncompressed little-endian pixels are viewed straight from the file's bytes (the reader masks unused high
bits and extends signs as pydicom does); other transfer syntaxes go through `Dataset.pixel_array`. Files that are not DICOM (a
README, a checksum list) are skipped and listed in `meta["skipped"]`; an empty file, a `.dcm` file that is
not DICOM, a damaged file, or an image file that lacks Rows/Columns, PixelData or (in a folder of several
files) SeriesInstanceUID is a DataError naming the file, so that a series never comes back silently shorter.
"""

from __future__ import annotations

import logging
import stat
import warnings
import zlib
from collections import Counter
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pydicom
from nibabel.orientations import aff2axcodes
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from medzoo.datasets.readers.base import (
    DICOM_SUFFIXES,
    Volume,
    check_array_bytes,
    check_finite,
    make_volume,
    max_array_bytes,
)
from medzoo.datasets.readers.dicom_native import PREAMBLE, file_meta, read_native
from medzoo.errors import DataError

log = logging.getLogger(__name__)

# A step that differs from the median step by more than this fraction is a gap (or an irregular series).
GAP_TOLERANCE = 0.5
# Direction cosines and spacings within this tolerance count as equal (scanners round them differently).
GEOMETRY_TOLERANCE = 1e-3
PIXEL_ELEMENTS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# A file with one of these suffixes (DICOM_SUFFIXES) that is not DICOM is an error, not a skipped stray file.
# Tags of the image pixel and image plane modules: a file holding any of them is an image, even when cut short.
IMAGE_TAGS = ("PhotometricInterpretation", "SamplesPerPixel", "BitsAllocated", "PixelSpacing", "ImagePositionPatient",
              "ImageOrientationPatient")
# Transfer syntaxes whose pixel data is the plain little-endian array once read (a deflated file is inflated whole).
NATIVE_LITTLE_ENDIAN = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian)
PIXEL_DATA = 0x7FE00010
# Files up to this size are read whole and parsed by `dicom_native.read_native` when it can; larger ones
# (rare in a series: a multi-frame file, or a stray archive) and every other file go to pydicom.
NATIVE_READ_MAX = 64 * 2**20
NATIVE_DTYPES = {(8, 0): "u1", (8, 1): "i1", (16, 0): "<u2", (16, 1): "<i2", (32, 0): "<u4", (32, 1): "<i4"}
# A deflated file (PS3.5 A.5) is inflated by medzoo, never by pydicom (which inflates all of it at once), and only
# as far as its own header describes: the elements before the pixel data may inflate to DEFLATED_HEADER_BYTES,
# the pixel data to the size Rows, Columns, samples, frames and BitsAllocated give, and what follows it to
# DEFLATED_TRAILER_BYTES; all of it to the reader memory cap (`base.max_array_bytes()`) at most.
DEFLATED_HEADER_BYTES = 16 * 2**20
DEFLATED_TRAILER_BYTES = 2**20
DEFLATED_UID = str(DeflatedExplicitVRLittleEndian)
# Read from a file too large to read whole, to find its transfer syntax in the file meta group.
HEAD_BYTES = 2**16
INFLATE_CHUNK = 2**16
PIXEL_TAGS = frozenset((0x7FE00008, 0x7FE00009, PIXEL_DATA))  # FloatPixelData, DoubleFloatPixelData, PixelData
UNDEFINED_LENGTH = 0xFFFFFFFF


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


class _Inflater:
    """A read/seek/tell file over a raw deflate stream, inflated on demand and never past `limit` bytes."""

    def __init__(self, compressed: BinaryIO, limit: int, path: Path):
        self._compressed, self.limit, self._path = compressed, limit, path
        self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
        self._data = bytearray()
        self._pos = 0
        self._done = False
        self.bounded_by = "the reader memory cap"

    def _fill(self, upto: int | None) -> None:
        """Inflate until `upto` bytes are there (None: all of them) or the stream ends; past `limit`, a DataError."""
        while not self._done and (upto is None or len(self._data) < upto):
            data = self._inflate.unconsumed_tail or self._compressed.read(INFLATE_CHUNK)
            if data:
                # one byte past the limit at most, enough to tell an over-long stream from one that fits
                self._data += self._inflate.decompress(data, min(INFLATE_CHUNK, self.limit + 1 - len(self._data)))
                self._done = self._inflate.eof
            else:
                self._data += self._inflate.flush()
                self._done = True
            if len(self._data) > self.limit:
                raise DataError(f"{self._path}: the deflated data set inflates past {self.limit:,} bytes, "
                                f"{self.bounded_by}; refusing to inflate it further (a decompression bomb or a "
                                "corrupt file). Re-export it uncompressed, or remove it from the series folder.")

    def read(self, size: int = -1) -> bytes:
        self._fill(None if size is None or size < 0 else self._pos + size)
        end = len(self._data) if size is None or size < 0 else self._pos + size
        chunk = bytes(self._data[self._pos:end])
        self._pos += len(chunk)
        return chunk

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 2:
            self._fill(None)
        self._pos = max(0, offset + (0, self._pos, len(self._data))[whence])
        return self._pos

    def tell(self) -> int:
        return self._pos


def _header_number(header: Dataset, name: str) -> int | None:
    try:
        value = header.get(name)
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _read_deflated(path: Path, compressed: BinaryIO, meta: dict, preamble: bytes) -> FileDataset:
    """Inflate a Deflated Explicit VR Little Endian data set within the bounds its own header sets (see
    DEFLATED_HEADER_BYTES), then parse it as pydicom would have."""
    cap, setting = max_array_bytes()
    inflater = _Inflater(compressed, DEFLATED_HEADER_BYTES, path)
    inflater.bounded_by = "the most its elements before the pixel data may take (dicom.DEFLATED_HEADER_BYTES)"
    if cap < inflater.limit:
        inflater.limit, inflater.bounded_by = cap, f"the reader memory cap ({setting})"
    pixels: dict[str, int] = {}

    def at_pixels(tag, vr, length) -> bool:
        if tag in PIXEL_TAGS:
            pixels.update(tag=int(tag), length=length)
            return True
        return False

    header = read_dataset(inflater, is_implicit_VR=False, is_little_endian=True, stop_when=at_pixels)
    if pixels:
        at = inflater.tell()
        rows, cols = _header_number(header, "Rows"), _header_number(header, "Columns")
        samples = _header_number(header, "SamplesPerPixel") or 1
        frames = _header_number(header, "NumberOfFrames") or 1
        bits = _header_number(header, "BitsAllocated") or {0x7FE00008: 32, 0x7FE00009: 64}.get(pixels["tag"], 16)
        if rows and cols and min(rows, cols, samples, frames, bits) > 0:
            claimed = (rows * cols * samples * frames * bits + 7) // 8
            check_array_bytes(claimed, path, f"a deflated image of Rows={rows} x Columns={cols} x {samples} "
                                             f"sample(s) x {frames} frame(s) of {bits} bits")
            claimed += claimed % 2  # values are padded to an even length
            described = f"Rows={rows} x Columns={cols} x {samples} sample(s) x {frames} frame(s) of {bits} bits"
        else:
            claimed = pixels["length"]
            check_array_bytes(claimed, path, f"deflated pixel data of {claimed:,} bytes")
            described = f"pixel data of {claimed:,} bytes"
        if pixels["length"] != UNDEFINED_LENGTH:
            claimed = min(claimed, pixels["length"])
        inflater.limit = at + 12 + claimed + DEFLATED_TRAILER_BYTES
        inflater.bounded_by = (f"the size its header describes ({described}, plus "
                               f"{DEFLATED_TRAILER_BYTES:,} bytes after the pixel data)")
        if cap < inflater.limit:
            inflater.limit, inflater.bounded_by = cap, f"the reader memory cap ({setting})"
    inflater.seek(0)
    dataset = read_dataset(inflater, is_implicit_VR=False, is_little_endian=True)
    inflater.seek(0, 2)  # whatever follows the last element counts against the bound too
    ds = FileDataset(str(path), dataset, preamble, FileMetaDataset(meta), False, True)
    ds.set_original_encoding(False, True, dataset._character_set)
    return ds


def _read_file(path: Path, size: int, force: bool) -> Dataset | str:
    """The whole file, header and pixel data, in one read; or the reason a non-DICOM file is skipped."""
    if size == 0:
        raise DataError(f"{path}: empty file (0 bytes) in a DICOM folder, a slice cut off by a failed copy or "
                        "download. Restore the file or remove it from the folder.")
    source: Path | BytesIO = path
    try:
        if size <= NATIVE_READ_MAX:
            data = head = path.read_bytes()
        else:
            data = None
            with open(path, "rb") as fh:
                head = fh.read(HEAD_BYTES)
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc}). Check its permissions, or remove it from the "
                        "series folder.") from exc
    if data is not None:
        ds = read_native(data, path)
        if ds is not None:
            return ds
        source = BytesIO(data)  # pydicom parses the bytes already read: still one read of the file
    meta = file_meta(head)
    if meta is not None and meta[2] == DEFLATED_UID:
        try:
            with BytesIO(data) if data is not None else open(path, "rb") as compressed:
                compressed.seek(meta[1])
                ds = _read_deflated(path, compressed, meta[0], head[:PREAMBLE])
        except DataError:
            raise
        except Exception as exc:  # pydicom raises many types on corrupt bytes; each is the file's fault
            raise DataError(f"{path}: deflated DICOM file is truncated or corrupt ({type(exc).__name__}: {exc}). "
                            "Remove the file from the series folder or replace it.") from exc
        return ds
    if meta is None and (head[PREAMBLE:PREAMBLE + 4] == b"DICM" or force) and DEFLATED_UID.encode("ascii") in head:
        # pydicom would inflate the whole data set in memory, with no bound
        raise DataError(f"{path}: a deflated DICOM file whose file meta medzoo cannot parse (no preamble, or a "
                        "damaged meta group); refusing to inflate it without a bound. Re-export it uncompressed, "
                        "or remove it from the series folder.")
    try:
        ds = pydicom.dcmread(source, force=force)
        ds.filename = str(path)
        return ds
    except InvalidDicomError as exc:
        if path.suffix.lower() in DICOM_SUFFIXES:
            raise DataError(f"{path}: named like a DICOM file but not one ({exc}). Replace or remove it; pass "
                            "force=True to read DICOM files that lack the preamble and 'DICM' marker.") from exc
        return "not DICOM"
    except Exception as exc:  # pydicom raises many types on corrupt bytes; each is the file's fault
        raise DataError(f"{path}: DICOM file is truncated or corrupt ({type(exc).__name__}: {exc}). "
                        "Remove the file from the series folder or replace it.") from exc


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
    files = [path] if path.is_file() else sorted(path.iterdir(), key=lambda file: file.name)
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
        found = _read_file(file, info.st_size, force)
        if not isinstance(found, str):
            found = _slice(_Header(found, file, values), force)
        if isinstance(found, str):
            skipped.setdefault(found, []).append(file.name)
        else:
            slices.append(found)
    return slices, skipped


def _choose_series(slices: list[_Slice], series_uid: str | None, source: Path) -> list[_Slice]:
    """The files of the one series in the folder, or of `series_uid`; a DataError when that is ambiguous."""
    unlabelled = [item.path.name for item in slices if item.series_uid is None]
    if unlabelled and len(slices) > 1 and series_uid is None:
        raise DataError(f"{source}: {len(unlabelled)} of {len(slices)} image files lack SeriesInstanceUID (e.g. "
                        f"{unlabelled[0]}), so they cannot be told apart from other series. Add the tag, or move "
                        "each such file into a folder of its own.")
    groups: dict[str, list[_Slice]] = {}
    for item in slices:
        groups.setdefault(item.series_uid or "<no SeriesInstanceUID>", []).append(item)
    listing = "; ".join(f"{uid} ({len(items)} files, series {items[0].series_number or '?'} "
                        f"'{items[0].description}', e.g. {items[0].path.name})" for uid, items in groups.items())
    if series_uid is not None:
        if series_uid not in groups:
            raise DataError(f"{source}: no series with SeriesInstanceUID {series_uid}. Found: {listing}.")
        return groups[series_uid]
    if len(groups) > 1:
        raise DataError(f"{source}: the folder mixes {len(groups)} DICOM series: {listing}. Pass series_uid=... "
                        "to read one of them, or move each series into its own folder.")
    return next(iter(groups.values()))


def _check_consistent(slices: list[_Slice], source: Path) -> None:
    shapes = Counter(item.shape for item in slices)
    if len(shapes) > 1:
        common = shapes.most_common(1)[0][0]
        odd = next(item for item in slices if item.shape != common)
        raise DataError(f"{source}: images of one series differ in size (rows, columns, samples): "
                        f"{dict(shapes)}; e.g. {odd.path.name} is {odd.shape}, most are {common}. "
                        "Remove the odd files (often a localizer) from the folder.")
    multi = [item for item in slices if item.frames > 1]
    if multi:
        raise DataError(f"{source}: {multi[0].path.name} is a multi-frame DICOM ({multi[0].frames} frames); only "
                        "series of single-frame files are supported. Convert it (e.g. dcm2niix) to NIfTI.")
    spacings = {item.pixel_spacing for item in slices if item.pixel_spacing is not None}
    if len(spacings) > 1 and np.ptp(np.array(sorted(spacings)), axis=0).max() > GEOMETRY_TOLERANCE:
        raise DataError(f"{source}: PixelSpacing differs between files of one series: {sorted(spacings)}.")


def _irregular_steps(steps: np.ndarray) -> tuple[np.ndarray, float]:
    """Indices of the steps that do not fit the series, and the step they were compared with."""
    median = float(np.median(steps))
    bad = np.flatnonzero(np.abs(steps - median) > GAP_TOLERANCE * median)
    if bad.size:
        return bad, median
    # In a short series the median itself may span a gap (positions 0, 1, 3 mm: steps 1 and 2, median 1.5),
    # but the smallest step cannot: a step much longer than it means slices are missing.
    smallest = float(steps.min())
    return np.flatnonzero(steps > (1 + GAP_TOLERANCE) * smallest), smallest


def _order_by_position(slices: list[_Slice], source: Path) -> tuple[list[_Slice], np.ndarray, np.ndarray]:
    """Slices sorted along the slice normal, their positions (mm along it) and the normal; errors on gaps."""
    first = slices[0].orientation
    for item in slices:
        if np.abs(item.orientation - first).max() > GEOMETRY_TOLERANCE:
            raise DataError(f"{source}: ImageOrientationPatient differs between files ({slices[0].path.name}: "
                            f"{np.round(first, 4).tolist()}, {item.path.name}: "
                            f"{np.round(item.orientation, 4).tolist()}): the slices are not parallel (a radial "
                            "or localizer series), so they do not form one volume.")
    normal = np.cross(first[:3], first[3:])
    if abs(np.linalg.norm(normal) - 1.0) > 0.1:
        raise DataError(f"{source}: ImageOrientationPatient of {slices[0].path.name} ({np.round(first, 4).tolist()}) "
                        "is not two perpendicular unit vectors, so the slice direction is unknown; the tag is "
                        "corrupt. Fix it or re-export the series.")
    positions = np.array([normal @ item.position for item in slices])
    order = np.argsort(positions, kind="stable")
    slices, positions = [slices[i] for i in order], positions[order]
    if len(slices) < 2:
        return slices, positions, normal
    steps = np.diff(positions)
    same = np.flatnonzero(steps < GEOMETRY_TOLERANCE)
    if same.size:
        i = int(same[0])
        raise DataError(f"{source}: {slices[i].path.name} and {slices[i + 1].path.name} lie at the same slice "
                        f"position ({positions[i]:.3f} mm along the normal); {same.size + 1} files share "
                        "positions, so the folder holds several volumes (echoes, time points or duplicates). "
                        "Split them into one folder per volume.")
    bad, median = _irregular_steps(steps)
    if bad.size:
        i = int(bad[0])
        if steps[i] > median:
            missing = [positions[i] + k * median for k in range(1, int(round(steps[i] / median)))]
            shown = ", ".join(f"{p:.3f}" for p in missing[:5]) + (", ..." if len(missing) > 5 else "")
            what = (f"{len(missing)} slice(s) missing at position(s) {shown} mm along the slice normal "
                    f"(expected step {median:.4g} mm)")
        else:
            what = f"a step of {steps[i]:.4g} mm where the median step is {median:.4g} mm (irregular spacing)"
        raise DataError(f"{source}: gap in the series between {slices[i].path.name} ({positions[i]:.3f} mm) "
                        f"and {slices[i + 1].path.name} ({positions[i + 1]:.3f} mm): {what}. "
                        f"{bad.size} irregular step(s) in all. Restore the missing files or read a complete series.")
    return slices, positions, normal


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


def _order_by_instance(slices: list[_Slice], missing: int, source: Path) -> tuple[list[_Slice], str]:
    """The fallback when position tags are missing: InstanceNumber order, with a warning."""
    if len(slices) == 1:  # nothing to order
        return slices, "one slice without ImagePositionPatient/ImageOrientationPatient: geometry unknown"
    unnumbered = [item.path.name for item in slices if item.instance is None]
    if unnumbered:
        unplaced = next(item.path.name for item in slices if item.orientation is None or item.position is None)
        raise DataError(f"{source}: cannot order the slices: {missing} file(s) lack ImagePositionPatient/"
                        f"ImageOrientationPatient (e.g. {unplaced}) and {len(unnumbered)} lack InstanceNumber "
                        f"(e.g. {unnumbered[0]}). Re-export the series with its position tags.")
    numbers = Counter(item.instance for item in slices)
    if max(numbers.values()) > 1:
        raise DataError(f"{source}: InstanceNumber repeats ({numbers.most_common(1)[0]}) and positions are "
                        "missing, so the slice order is unknown.")
    note = (f"{missing} of {len(slices)} file(s) lack ImagePositionPatient/ImageOrientationPatient: slices "
            "ordered by InstanceNumber, slice step unknown")
    warnings.warn(f"{source}: {note}.", stacklevel=3)
    return sorted(slices, key=lambda item: item.instance), note


def _stack_pixels(slices: list[_Slice], source: Path) -> np.ndarray:
    """Decode every slice, in order, into one preallocated `(samples, D, rows, cols)` array, rescaled."""
    rows, cols, samples = slices[0].shape
    rescaled = any(item.slope != 1.0 or item.intercept != 0.0 for item in slices)
    # 4 bytes a sample: float32 when rescaled, and at most 32-bit integers otherwise (64-bit data is rare).
    check_array_bytes(rows * cols * samples * len(slices) * 4, source,
                      f"{len(slices)} slice(s) of Rows={rows} x Columns={cols} x {samples} sample(s)")
    out = None
    for index, item in enumerate(slices):
        pixels = _pixels(item)
        item.dataset = None  # the encoded bytes are no longer needed: keep peak memory near the output size
        if out is None:
            # The stored type is known only once a slice is decoded (compressed data may differ from the header).
            out = np.empty((samples, len(slices), rows, cols), dtype=np.float32 if rescaled else pixels.dtype)
        elif not rescaled and not np.can_cast(pixels.dtype, out.dtype, "safe"):
            out = out.astype(np.result_type(out.dtype, pixels.dtype))
        if samples > 1:
            pixels = np.moveaxis(pixels, -1, 0)
        if rescaled:
            out[:, index] = pixels * np.float32(item.slope) + np.float32(item.intercept)
        else:
            out[:, index] = pixels
    return out


def _ras_affine(first: _Slice, normal: np.ndarray, step: float | None) -> np.ndarray:
    """Map an output index (d, h, w) to RAS+ mm; an unknown step or pixel spacing counts as 1 mm."""
    row_spacing, col_spacing = first.pixel_spacing or (1.0, 1.0)
    lps = np.eye(4)
    lps[:3, 0] = normal * (step or 1.0)
    lps[:3, 1] = first.orientation[3:] * row_spacing  # the row index moves along the column direction cosines
    lps[:3, 2] = first.orientation[:3] * col_spacing
    lps[:3, 3] = first.position
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # DICOM patient space is LPS+; report RAS+ like NIfTI


def read_dicom_series(path: str | Path, *, series_uid: str | None = None, allow_nonfinite: bool = False,
                      force: bool = False) -> Volume:
    """Read the one DICOM series in folder `path` (or a single .dcm file) as `(C, D, H, W)`.

    Args:
        series_uid: the SeriesInstanceUID to read when the folder holds several series.
        force: also try files without the DICM preamble (passed to `pydicom.dcmread`).
    """
    source = Path(path)
    slices, skipped = _scan(source, force)
    skipped_text = ", ".join(f"{len(names)} {why}" for why, names in skipped.items())
    if skipped:
        log.warning("%s: skipped %d file(s): %s", source, sum(map(len, skipped.values())), skipped_text)
    if not slices:
        raise DataError(f"{source}: no DICOM image files found (skipped: {skipped_text or 'nothing'}).")
    slices = _choose_series(slices, series_uid, source)
    _check_consistent(slices, source)
    notes: list[str] = []
    missing = sum(item.orientation is None or item.position is None for item in slices)
    positions = normal = step = None
    if missing == 0:
        slices, positions, normal = _order_by_position(slices, source)
        if len(slices) > 1:
            step = float(np.median(np.diff(positions)))
        else:
            notes.append("one slice: slice step unknown")
    else:
        slices, note = _order_by_instance(slices, missing, source)
        notes.append(note)
    head = slices[0]
    if head.pixel_spacing is None:
        notes.append("no PixelSpacing: in-plane spacing unknown")
    out = _stack_pixels(slices, source)
    check_finite(out, source, allow_nonfinite)
    affine = None if normal is None else _ras_affine(head, normal, step)
    uniform = len({(item.slope, item.intercept) for item in slices}) == 1
    return make_volume(
        out, source, (step,) + (head.pixel_spacing or (None, None)),
        None if affine is None else "".join(aff2axcodes(affine)), affine=affine,
        ordered_by="position" if positions is not None else "InstanceNumber",
        positions=None if positions is None else [float(p) for p in positions],
        instance_numbers=[item.instance for item in slices], files=[item.path.name for item in slices],
        series_uid=head.series_uid, series_number=head.series_number, series_description=head.description,
        modality=head.modality, transfer_syntaxes=sorted({item.transfer_syntax for item in slices}),
        rescale=(head.slope, head.intercept) if uniform else "per slice",
        missing_position_tags=missing, skipped={why: len(names) for why, names in skipped.items()},
        skipped_files=[name for names in skipped.values() for name in names], notes=notes)

"""One file of a DICOM folder, read once and within bounds: its dataset, or the reason it is skipped.

A plain Part 10 file in little endian up to NATIVE_READ_MAX bytes is parsed from its bytes by
`dicom_native.read_native`, others by `pydicom.dcmread`; a deflated file is inflated here (`_Inflater`), never
whole by pydicom, and only as far as its own header describes (DEFLATED_HEADER_BYTES).
"""

from __future__ import annotations

import zlib
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian

from medzoo.datasets.readers.dicom_native import PREAMBLE, file_meta, read_native
from medzoo.datasets.readers.registry import DICOM_SUFFIXES, check_array_bytes, max_array_bytes
from medzoo.errors import DataError

PIXEL_DATA = 0x7FE00010
# Files up to this size are read whole and parsed by `dicom_native.read_native` when it can; larger ones
# (rare in a series: a multi-frame file, or a stray archive) and every other file go to pydicom.
NATIVE_READ_MAX = 64 * 2**20
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
    inflater.bounded_by = "the most its elements before the pixel data may take (dicom_file.DEFLATED_HEADER_BYTES)"
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

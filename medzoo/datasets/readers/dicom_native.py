"""The raw elements of a plain DICOM file, parsed from its bytes in one pass, as pydicom would return them.

A series reader spends most of its time in `pydicom.dcmread` walking each file's element headers through a
buffered file (a read call for each header and value) and building the file-meta dataset. For the commonest
file of a series, a Part 10 file (128-byte preamble, "DICM") in explicit or implicit VR little endian whose
elements all have defined lengths, `read_native` parses the bytes already in memory with `struct` and
builds the same `FileDataset` of `RawDataElement`s that `dcmread` builds (values are still converted lazily,
by pydicom). Any other file (no preamble, another transfer syntax, an undefined length, a sequence delimiter
or a command set at the top level, a VR pydicom does not know, a length past the end, a value pydicom's reader
would trip on) gives None, and the caller reads it with pydicom,
which then reports its own errors.
"""

from __future__ import annotations

from pathlib import Path
from struct import Struct

from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import RawDataElement, convert_raw_data_element, empty_value_for_VR
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.tag import BaseTag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, VR

PREAMBLE = 128
MAGIC = b"DICM"
# Explicit VRs whose header holds 2 reserved bytes and a 4-byte length (PS3.5 7.1.2); the others a 2-byte length.
LONG_VRS = frozenset(vr.value.encode("ascii") for vr in EXPLICIT_VR_LENGTH_32)
KNOWN_VRS = frozenset(vr.value.encode("ascii") for vr in VR if len(vr.value) == 2)
UNDEFINED = 0xFFFFFFFF
ITEM_GROUP = 0xFFFE  # item and delimitation tags: never top-level elements of a plain file
META_GROUP = 0x0002
COMMAND_GROUP = 0x0000  # a DIMSE command set, which pydicom reads apart: left to it
CHARSET = BaseTag(0x00080005)
TRANSFER_SYNTAX = BaseTag(0x00020010)
IMPLICIT = {str(ImplicitVRLittleEndian): True, str(ExplicitVRLittleEndian): False}
_TAG = Struct("<HH")
_U16 = Struct("<H")
_U32 = Struct("<I")


def _elements(data: bytes, start: int, implicit: bool, meta: bool) -> tuple[dict, int] | None:
    """{tag: RawDataElement} from `start` to the end (or, with `meta`, to the end of group 0002), and where
    it stopped; None at anything this parser leaves to pydicom."""
    out, offset, end = {}, start, len(data)
    while offset < end:
        if offset + 8 > end:
            return None
        group, element = _TAG.unpack_from(data, offset)
        if meta and group != META_GROUP:
            break
        if group in (ITEM_GROUP, COMMAND_GROUP):
            return None
        if implicit:
            vr, (length,), value_at = None, _U32.unpack_from(data, offset + 4), offset + 8
        else:
            code = data[offset + 4 : offset + 6]
            if code not in KNOWN_VRS:
                return None
            if code in LONG_VRS:
                if offset + 12 > end:
                    return None
                (length,), value_at = _U32.unpack_from(data, offset + 8), offset + 12
            else:
                (length,), value_at = _U16.unpack_from(data, offset + 6), offset + 8
            vr = code.decode("ascii")
        if length == UNDEFINED or value_at + length > end:
            return None
        tag = BaseTag(group << 16 | element)
        value = data[value_at : value_at + length] if length else empty_value_for_VR(vr, raw=True)
        out[tag] = RawDataElement(tag, vr, length, value, value_at, implicit, True)
        offset = value_at + length
    return out, offset


def file_meta(data: bytes) -> tuple[dict, int, str] | None:
    """The raw file-meta elements of a Part 10 file, where its data set starts and its transfer syntax UID; None
    without a preamble and a parsable meta group holding the transfer syntax (`data` may be just the file's head)."""
    if len(data) < PREAMBLE + 4 or data[PREAMBLE : PREAMBLE + 4] != MAGIC:
        return None
    found = _elements(data, PREAMBLE + 4, implicit=False, meta=True)
    if found is None or TRANSFER_SYNTAX not in found[0]:
        return None
    meta_elements, offset = found
    syntax = (meta_elements[TRANSFER_SYNTAX].value or b"").decode("ascii", "replace").rstrip("\0 ")
    return meta_elements, offset, syntax


def read_native(data: bytes, path: Path) -> FileDataset | None:
    """The file's dataset as `pydicom.dcmread(path)` returns it, or None when pydicom should read it."""
    meta = file_meta(data)
    if meta is None:
        return None
    meta_elements, offset, syntax = meta
    implicit = IMPLICIT.get(syntax)
    if implicit is None:
        return None
    found = _elements(data, offset, implicit, meta=False)
    if found is None:
        return None
    elements = found[0]
    try:  # as pydicom's reader does it; a value it cannot take (a damaged charset) is left to pydicom's errors
        dataset = Dataset(elements)
        encoding = default_encoding
        if CHARSET in elements:
            encoding = convert_encodings(convert_raw_data_element(elements[CHARSET]).value)
        dataset.set_original_encoding(implicit, True, encoding)
        ds = FileDataset(str(path), dataset, data[:PREAMBLE], FileMetaDataset(meta_elements), implicit, True)
        ds.set_original_encoding(implicit, True, dataset._character_set)
    except Exception:
        return None
    return ds

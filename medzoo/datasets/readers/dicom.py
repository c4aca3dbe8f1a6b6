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
(others through `pydicom.dcmread`; a deflated file is inflated by medzoo, never whole by pydicom, and only as
far as its own header describes, see dicom_file.DEFLATED_HEADER_BYTES). A series repeats most header
values in every file, so each distinct raw value of a tag is converted once per read (`_TagValues`), and
uncompressed little-endian pixels are viewed straight from the file's bytes (the reader masks unused high
bits and extends signs as pydicom does); other transfer syntaxes go through `Dataset.pixel_array`. Files that are not DICOM (a
README, a checksum list) are skipped and listed in `meta["skipped"]`; an empty file, a `.dcm` file that is
not DICOM, a damaged file, or an image file that lacks Rows/Columns, PixelData or (in a folder of several
files) SeriesInstanceUID is a DataError naming the file, so that a series never comes back silently shorter.

Where the parts live: `dicom_file` reads each file once within its bounds (the deflate guard),
`dicom_slices` turns a read file into the facts of one slice and decodes its pixels, and this module groups,
checks and orders the slices of one series and stacks them into the volume.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from nibabel.orientations import aff2axcodes

from medzoo.datasets.readers.dicom_slices import _pixels, _scan, _Slice
from medzoo.datasets.readers.registry import Volume, check_array_bytes, check_finite, make_volume
from medzoo.errors import DataError

log = logging.getLogger(__name__)

# A step that differs from the median step by more than this fraction is a gap (or an irregular series).
GAP_TOLERANCE = 0.5
# Direction cosines and spacings within this tolerance count as equal (scanners round them differently).
GEOMETRY_TOLERANCE = 1e-3


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


def _axis_codes(affine: np.ndarray, source: Path) -> str:
    """The RAS axis codes of `affine` ("LPS", ...), or a DataError when the headers give no usable geometry."""
    try:
        codes = aff2axcodes(affine) if np.isfinite(affine).all() else (None,)
    except np.linalg.LinAlgError:  # finite but so large that the SVD overflows
        codes = (None,)
    if None in codes:
        raise DataError(f"{source}: ImagePositionPatient and ImageOrientationPatient give no usable slice "
                        "geometry (positions too far apart, or slices on one spot); the headers are corrupt. "
                        "Re-export the series.")
    return "".join(codes)


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
        with np.errstate(over="ignore", invalid="ignore"):  # absurd positions: refused by `_axis_codes` below
            slices, positions, normal = _order_by_position(slices, source)
            step = float(np.median(np.diff(positions))) if len(slices) > 1 else None
        if step is None:
            notes.append("one slice: slice step unknown")
    else:
        slices, note = _order_by_instance(slices, missing, source)
        notes.append(note)
    head = slices[0]
    if head.pixel_spacing is None:
        notes.append("no PixelSpacing: in-plane spacing unknown")
    elif not all(np.isfinite(v) and v > 0 for v in head.pixel_spacing):
        notes.append(f"PixelSpacing {head.pixel_spacing} is not a positive size: in-plane spacing unknown")
        head = dataclasses.replace(head, pixel_spacing=None)
    out = _stack_pixels(slices, source)
    check_finite(out, source, allow_nonfinite)
    with np.errstate(over="ignore", invalid="ignore"):
        affine = None if normal is None else _ras_affine(head, normal, step)
    uniform = len({(item.slope, item.intercept) for item in slices}) == 1
    return make_volume(
        out, source, (step,) + (head.pixel_spacing or (None, None)),
        None if affine is None else _axis_codes(affine, source), affine=affine,
        ordered_by="position" if positions is not None else "InstanceNumber",
        positions=None if positions is None else [float(p) for p in positions],
        instance_numbers=[item.instance for item in slices], files=[item.path.name for item in slices],
        series_uid=head.series_uid, series_number=head.series_number, series_description=head.description,
        modality=head.modality, transfer_syntaxes=sorted({item.transfer_syntax for item in slices}),
        rescale=(head.slope, head.intercept) if uniform else "per slice",
        missing_position_tags=missing, skipped={why: len(names) for why, names in skipped.items()},
        skipped_files=[name for names in skipped.values() for name in names], notes=notes)

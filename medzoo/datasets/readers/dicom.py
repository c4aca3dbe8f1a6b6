"""A folder holding one DICOM series -> `(C, D, H, W)` (C = 1, or 3 for RGB), slices ordered in space.

D is the slice axis, ordered by position along the slice normal (the cross product of the
ImageOrientationPatient rows, dotted with ImagePositionPatient), never by file name or InstanceNumber;
H is the image rows, W the columns; `meta["spacing"]` is (slice step, row spacing, column spacing) in mm.
`meta["affine"]` maps an output index (d, h, w) to RAS+ millimetres and `meta["orientation"]` gives the
RAS+ axis code each output axis grows towards: the same conventions as the NIfTI reader, but the voxels are
left in acquisition order (not reoriented). RescaleSlope/RescaleIntercept are applied: the result is float32
when any slice has a slope other than 1 or an intercept other than 0, and the stored integer type otherwise.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from nibabel.orientations import aff2axcodes
from pydicom.errors import InvalidDicomError

from medzoo.datasets.readers.base import Volume, check_finite, make_volume
from medzoo.errors import DataError

log = logging.getLogger(__name__)

# A step that differs from the median step by more than this fraction is a gap (or an irregular series).
GAP_TOLERANCE = 0.5
# Direction cosines and spacings within this tolerance count as equal (scanners round them differently).
GEOMETRY_TOLERANCE = 1e-3
PIXEL_ELEMENTS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


@dataclass
class _Slice:
    """The header facts of one file needed to group, check and order it."""

    path: Path
    series_uid: str
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


def _floats(value, count: int) -> np.ndarray | None:
    try:
        array = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return array if array.shape == (count,) and np.isfinite(array).all() else None


def _header(path: Path, force: bool) -> _Slice | str:
    """The header of `path`, or the reason it is skipped (not DICOM, not an image)."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=force)
    except InvalidDicomError:
        return "not DICOM"
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: DICOM header is truncated or corrupt ({type(exc).__name__}: {exc}). "
                        "Remove the file from the series folder or replace it.") from exc
    if "Rows" not in ds or "Columns" not in ds:
        return "not an image (DICOM without Rows/Columns: DICOMDIR, report, ...)"
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    spacing = _floats(spacing, 2) if spacing is not None else None
    instance = ds.get("InstanceNumber")
    transfer = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return _Slice(
        path=path, series_uid=str(ds.get("SeriesInstanceUID", "<no SeriesInstanceUID>")),
        shape=(int(ds.Rows), int(ds.Columns), int(ds.get("SamplesPerPixel", 1) or 1)),
        frames=int(ds.get("NumberOfFrames", 1) or 1),
        orientation=_floats(ds.get("ImageOrientationPatient") or [], 6),
        position=_floats(ds.get("ImagePositionPatient") or [], 3),
        instance=None if instance in (None, "") else int(instance),
        slope=float(ds.get("RescaleSlope", 1.0) or 1.0), intercept=float(ds.get("RescaleIntercept", 0.0) or 0.0),
        pixel_spacing=None if spacing is None else (float(spacing[0]), float(spacing[1])),
        series_number=str(ds.get("SeriesNumber", "")), description=str(ds.get("SeriesDescription", "")),
        modality=str(ds.get("Modality", "")),
        transfer_syntax=transfer.name if transfer is not None else "unknown")


def _scan(path: Path, force: bool) -> tuple[list[_Slice], dict[str, list[str]]]:
    files = [path] if path.is_file() else sorted(path.iterdir())
    slices, skipped = [], {}
    for file in files:
        if file.is_dir():
            skipped.setdefault("subfolder (not searched)", []).append(file.name)
            continue
        found = _header(file, force)
        if isinstance(found, str):
            skipped.setdefault(found, []).append(file.name)
        else:
            slices.append(found)
    return slices, skipped


def _choose_series(slices: list[_Slice], series_uid: str | None, source: Path) -> list[_Slice]:
    groups: dict[str, list[_Slice]] = {}
    for item in slices:
        groups.setdefault(item.series_uid, []).append(item)
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
    median = float(np.median(steps))
    bad = np.flatnonzero(np.abs(steps - median) > GAP_TOLERANCE * median)
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


def _pixels(item: _Slice, force: bool) -> np.ndarray:
    try:
        ds = pydicom.dcmread(item.path, force=force)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{item.path}: cannot read the DICOM file ({type(exc).__name__}: {exc}).") from exc
    if not any(name in ds for name in PIXEL_ELEMENTS):
        raise DataError(f"{item.path}: the file has an image header but no pixel data (no PixelData element). "
                        "Remove it from the series folder or replace it.")
    try:
        pixels = ds.pixel_array
    except (NotImplementedError, RuntimeError, ImportError) as exc:
        raise DataError(f"{item.path}: cannot decode transfer syntax '{item.transfer_syntax}' ({exc}). Install "
                        "a decoder pydicom can use (pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg, "
                        "or one named above) or convert the series to an uncompressed one.") from exc
    except (ValueError, EOFError, OSError, TypeError) as exc:
        raise DataError(f"{item.path}: pixel data is truncated or corrupt ({exc}).") from exc
    rows, cols, samples = item.shape
    expected = (rows, cols) if samples == 1 else (rows, cols, samples)
    if pixels.shape != expected:
        raise DataError(f"{item.path}: decoded pixel array has shape {pixels.shape}, header says {expected}.")
    return pixels


def _order_by_instance(slices: list[_Slice], missing: int, source: Path) -> tuple[list[_Slice], str]:
    """The fallback when position tags are missing: InstanceNumber order, with a warning."""
    unnumbered = [item.path.name for item in slices if item.instance is None]
    if unnumbered:
        raise DataError(f"{source}: cannot order the slices: {missing} file(s) lack ImagePositionPatient/"
                        f"ImageOrientationPatient and {len(unnumbered)} lack InstanceNumber (e.g. {unnumbered[0]}).")
    numbers = Counter(item.instance for item in slices)
    if max(numbers.values()) > 1:
        raise DataError(f"{source}: InstanceNumber repeats ({numbers.most_common(1)[0]}) and positions are "
                        "missing, so the slice order is unknown.")
    note = (f"{missing} of {len(slices)} file(s) lack ImagePositionPatient/ImageOrientationPatient: slices "
            "ordered by InstanceNumber, slice step unknown")
    warnings.warn(f"{source}: {note}.", stacklevel=3)
    return sorted(slices, key=lambda item: item.instance), note


def _stack_pixels(slices: list[_Slice], force: bool) -> np.ndarray:
    """Decode every slice, in order, into one preallocated `(samples, D, rows, cols)` array, rescaled."""
    rows, cols, samples = slices[0].shape
    rescaled = any(item.slope != 1.0 or item.intercept != 0.0 for item in slices)
    out = None
    for index, item in enumerate(slices):
        pixels = _pixels(item, force)
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
    out = _stack_pixels(slices, force)
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

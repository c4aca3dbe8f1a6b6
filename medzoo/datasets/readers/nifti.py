"""NIfTI (and other nibabel) volumes, reoriented to RAS+ and returned as `(C, D, H, W)` = `(C, z, y, x)`.

Axis convention: the voxel grid is first reoriented to the closest canonical RAS+ grid (exactly what
`nibabel.as_closest_canonical` does), whose array axes are (x: left->Right, y: posterior->Anterior,
z: inferior->Superior). The output reverses them to `(z, y, x)`, so D runs inferior->superior over axial
slices, H posterior->anterior and W left->right: `meta["orientation"] == "SAR"` (one code per output axis,
the direction its index grows towards), and `meta["spacing"]` is `(dz, dy, dx)`. This order matches the
DICOM reader's (slice, row, column) and is the storage order of NIfTI (x varies fastest), so an already
canonical file needs no copy. A 4D file's 4th axis (and any higher axis, flattened) becomes the channels.

Scaling: with `scl_slope`/`scl_inter` set (and not 1/0) the scaled data comes back as float32; otherwise the
stored dtype is kept (an 8-bit volume stays uint8, at a quarter of the memory of float32).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import aff2axcodes, apply_orientation, inv_ornt_aff, io_orientation

from medzoo.datasets.readers.base import Volume, check_array_bytes, check_finite, make_volume
from medzoo.errors import DataError

# Two files are on one grid when their canonical affines agree to this many millimetres.
GRID_TOLERANCE_MM = 1e-3
# Deflate expands data at most about 1032-fold, which bounds what a .nii.gz file can hold.
MAX_DEFLATE_RATIO = 1032


@dataclass
class _Plan:
    """What the header says before any voxel is read: enough to check grids and preallocate."""

    path: Path
    image: nib.spatialimages.SpatialImage
    ornt: np.ndarray
    shape: tuple[int, int, int]  # canonical (z, y, x)
    channels: int
    dtype: np.dtype
    affine: np.ndarray  # maps an output index (d, h, w) to RAS+ millimetres
    slope: float | None
    inter: float | None


def _check_data_fits(image: nib.spatialimages.SpatialImage, path: Path, nbytes: int) -> None:
    """A single-file NIfTI too small to hold the voxels its header claims is a DataError, raised before nibabel
    would allocate (and zero) the whole claimed size only to find the data missing."""
    name, size = path.name.lower(), path.stat().st_size
    offset = int(getattr(image.dataobj, "offset", 0) or 0)
    if name.endswith(".nii.gz"):
        holds = size * MAX_DEFLATE_RATIO  # what a gzip stream of this size can possibly expand to
    elif name.endswith(".nii"):
        holds = size
    else:
        return
    if offset + nbytes > holds:
        raise DataError(f"{path}: the header claims {nbytes:,} bytes of voxels after byte {offset:,}, more than "
                        f"a file of {size:,} bytes can hold: it is truncated or its header is corrupt. "
                        "Re-export or re-download it.")


def _plan(path: Path) -> _Plan:
    try:
        image = nib.load(str(path))
    except FileNotFoundError as exc:
        raise DataError(f"NIfTI file not found: {path}.") from exc
    except Exception as exc:  # nibabel raises many types on corrupt bytes; each is the file's fault
        raise DataError(f"{path}: not a readable NIfTI file, the header is truncated or corrupt "
                        f"({type(exc).__name__}: {exc}).") from exc
    if not hasattr(image, "affine") or image.affine is None:
        raise DataError(f"{path}: nibabel read it as {type(image).__name__}, which has no voxel-to-world affine.")
    shape = tuple(image.shape) + (1,) * max(0, 3 - len(image.shape))
    spatial = shape[:3]
    stored = image.get_data_dtype()
    fields = len(stored.names) if stored.names else 1  # RGB NIfTI stores a structured (R, G, B) voxel
    channels = int(np.prod(shape[3:], dtype=np.int64)) * fields
    # nibabel moves scl_slope/scl_inter from the header into the array proxy on load (the header then says NaN).
    slope = float(getattr(image.dataobj, "slope", 1.0))
    inter = float(getattr(image.dataobj, "inter", 0.0))
    identity = slope == 1.0 and inter == 0.0
    if fields > 1:
        dtype = np.dtype(stored[0]).newbyteorder("=")
    else:
        dtype = stored.newbyteorder("=") if identity else np.dtype(np.float32)
    voxel_bytes = fields * max(dtype.itemsize, stored.itemsize // fields)
    # Python integers: a corrupt header's dimensions may overflow int64.
    check_array_bytes(math.prod(int(n) for n in shape) * voxel_bytes, path, f"shape {tuple(image.shape)} of {stored}")
    _check_data_fits(image, path, math.prod(int(n) for n in shape) * stored.itemsize)
    if not np.isfinite(image.affine).all():
        raise DataError(f"{path}: the affine holds NaN or Inf, so voxel positions are unknown; the header is "
                        f"corrupt:\n{image.affine}")
    ornt = io_orientation(image.affine)
    if np.isnan(ornt).any():
        raise DataError(f"{path}: the affine is degenerate (a zero axis), so the orientation is unknown:\n"
                        f"{image.affine}")
    canonical = inv_ornt_aff(ornt, spatial)
    xyz_affine = image.affine @ canonical
    xyz_shape = [0, 0, 0]
    for axis, (target, _) in enumerate(ornt.astype(int)):
        xyz_shape[target] = spatial[axis]
    out_affine = xyz_affine.copy()
    out_affine[:, :3] = xyz_affine[:, [2, 1, 0]]
    return _Plan(path, image, ornt, (xyz_shape[2], xyz_shape[1], xyz_shape[0]), channels, dtype, out_affine,
                 None if identity else slope, None if identity else inter)


def _read(plan: _Plan) -> np.ndarray:
    """The voxels as a `(C, z, y, x)` view (flips and transposes only; the caller copies once)."""
    try:
        if plan.slope is None and plan.inter is None:
            data = np.asanyarray(plan.image.dataobj)
        else:
            data = np.asarray(plan.image.dataobj, dtype=np.float32)
    except Exception as exc:  # truncated gzip streams and short files surface as many types
        raise DataError(f"{plan.path}: cannot read the voxel data, the file is truncated or corrupt "
                        f"({type(exc).__name__}: {exc}). Re-export or re-download it.") from exc
    if data.dtype.names:
        data = np.stack([data[name] for name in data.dtype.names], axis=-1)
    spatial = tuple(data.shape[:3]) + (1,) * max(0, 3 - data.ndim)
    data = data.reshape(spatial + (-1,))
    data = apply_orientation(data, plan.ornt)
    return data.transpose(3, 2, 1, 0)


def _volume(out: np.ndarray, plan: _Plan, source: str, **extra) -> Volume:
    voxel = np.sqrt((plan.affine[:3, :3] ** 2).sum(axis=0))
    return make_volume(out, source, tuple(float(v) for v in voxel), "".join(aff2axcodes(plan.affine)),
                       affine=plan.affine, original_orientation="".join(aff2axcodes(plan.image.affine)), **extra)


def read_nifti(path: str | Path, *, allow_nonfinite: bool = False) -> Volume:
    """Read one NIfTI file as `(C, z, y, x)` in RAS+ (see the module docstring for axes and dtype)."""
    plan = _plan(Path(path))
    # One copy at most (none for a canonical, native-endian file), which also makes big-endian data native.
    out = np.ascontiguousarray(_read(plan), dtype=plan.dtype)
    check_finite(out, plan.path, allow_nonfinite)
    return _volume(out, plan, str(plan.path), scl_slope=plan.slope, scl_inter=plan.inter)


def read_nifti_channels(paths: Sequence[str | Path], *, allow_nonfinite: bool = False) -> Volume:
    """Stack several NIfTI files on one grid (e.g. T1, T2, FLAIR) as the channels of one volume, in order.

    Grids are compared from the headers before any voxel is read; a different shape or affine is a DataError.
    """
    if not paths:
        raise DataError("read_nifti_channels: no files given; pass the NIfTI paths to stack as channels.")
    plans = [_plan(Path(p)) for p in paths]
    first = plans[0]
    for plan in plans[1:]:
        if plan.shape != first.shape:
            raise DataError(f"{plan.path}: grid shape {plan.shape} (z, y, x after RAS+ reorientation) differs "
                            f"from {first.shape} of {first.path}; resample both onto one grid before stacking.")
        if not np.allclose(plan.affine, first.affine, rtol=0, atol=GRID_TOLERANCE_MM):
            raise DataError(f"{plan.path}: affine differs from that of {first.path} (same shape, different "
                            f"position or voxel size):\n{plan.affine}\nvs\n{first.affine}\nRegister or "
                            "resample the images onto one grid before stacking them as channels.")
    dtype = np.result_type(*(plan.dtype for plan in plans))
    out = np.empty((sum(plan.channels for plan in plans),) + first.shape, dtype=dtype)
    start = 0
    for plan in plans:
        out[start:start + plan.channels] = _read(plan)
        # Checked per file so that the error names the file holding the NaN.
        check_finite(out[start:start + plan.channels], plan.path, allow_nonfinite)
        start += plan.channels
    names = [p.path.name.removesuffix(".gz").removesuffix(".nii") for p in plans]
    return _volume(out, first, "; ".join(str(p.path) for p in plans), sources=[str(p.path) for p in plans],
                   channel_names=names, scl_slope=[p.slope for p in plans], scl_inter=[p.inter for p in plans])

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

import gzip
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import aff2axcodes, apply_orientation, inv_ornt_aff, io_orientation

from medzoo.datasets.readers.registry import (
    Volume,
    check_array_bytes,
    check_finite,
    make_volume,
    max_array_bytes,
)
from medzoo.errors import DataError

# Two files are on one grid when their canonical affines agree to this many millimetres.
GRID_TOLERANCE_MM = 1e-3
# Deflate expands data at most about 1032-fold, which bounds what a .nii.gz file can hold.
MAX_DEFLATE_RATIO = 1032
# A .nii.gz stream is inflated no further than its header describes (header, extensions, voxels) plus this much;
# a stream that goes on past it is refused as a decompression bomb, not read to its end.
GZIP_SLACK_BYTES = 2**16
# Headers by their sizeof_hdr field (either byte order): NIfTI-1, NIfTI-2.
NIFTI_CLASSES = {348: nib.Nifti1Image, 540: nib.Nifti2Image}
READ_CHUNK = 2**20


class _BoundedGzip(io.RawIOBase):
    """A .nii.gz opened for nibabel that never inflates past `limit` bytes: a read or seek beyond is a DataError.

    Reads go into the caller's buffer a block at a time, so a volume is never held twice while it is inflated.
    """

    def __init__(self, path: Path, limit: int):
        super().__init__()
        self.path, self.limit = path, limit
        self.described = "its header"
        self._gz = gzip.GzipFile(path, "rb")

    def _past(self) -> DataError:
        return DataError(f"{self.path}: the gzip stream goes on past {self.limit:,} bytes, the most {self.described} "
                         "allows; refusing to inflate it further (a decompression bomb or a corrupt file). Re-export "
                         "or re-download it.")

    def read(self, size: int = -1) -> bytes:
        room = self.limit + 1 - self._gz.tell()  # one byte past the limit tells an over-long stream
        data = self._gz.read(room if size is None or size < 0 else min(size, room))
        if self._gz.tell() > self.limit:
            raise self._past()
        return data

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view):
            room = self.limit + 1 - self._gz.tell()
            count = self._gz.readinto(view[done:done + min(READ_CHUNK, room)])
            if self._gz.tell() > self.limit:
                raise self._past()
            if not count:
                break
            done += count
        return done

    def seek(self, offset: int, whence: int = 0) -> int:
        target = offset + (0, self._gz.tell())[whence] if whence in (0, 1) else None
        if target is None:
            raise OSError(f"{self.path}: seeking from the end of a gzip stream is not supported")
        if target > self.limit:
            raise self._past()
        return self._gz.seek(target)

    def tell(self) -> int:
        return self._gz.tell()

    def check_end(self, end: int) -> None:
        """Refuse the file when its stream holds more than GZIP_SLACK_BYTES past byte `end`."""
        self.seek(end)
        self.read()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def close(self) -> None:
        if getattr(self, "_gz", None) is not None:  # None when opening the file failed
            self._gz.close()
        super().close()


def _load_gzip(path: Path) -> tuple[nib.spatialimages.SpatialImage, _BoundedGzip]:
    """Open a .nii.gz with nibabel through `_BoundedGzip`: the header and its extensions are inflated only as
    far as the header's own data offset, and the limit for the voxels is set once `_plan` has checked them."""
    stream = _BoundedGzip(path, 540 + 4)
    try:
        raw = stream.read(540 + 4)
        sizeof = (int.from_bytes(raw[:4], "little"), int.from_bytes(raw[:4], "big"))
        klass = NIFTI_CLASSES.get(sizeof[0]) or NIFTI_CLASSES.get(sizeof[1])
        if klass is None:
            raise DataError(f"{path}: not a NIfTI-1 or NIfTI-2 file (sizeof_hdr is {sizeof[0]}, expected 348 or "
                            "540); re-export it, or convert it to NIfTI.")
        header = klass.header_class(raw[:klass.header_class.template_dtype.itemsize])
        offset = int(header.get_data_offset())
        stream.limit = max(offset, klass.header_class.template_dtype.itemsize + 4)
        stream.described = f"its header and extensions may take (its data offset, {offset:,})"
        cap, setting = max_array_bytes()
        if cap < stream.limit:
            stream.limit, stream.described = cap, f"the reader memory cap ({setting})"
        stream.seek(0)
        image = klass.from_file_map(klass.make_file_map({"image": stream, "header": stream}), mmap=False)
    except BaseException:
        stream.close()
        raise
    return image, stream


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
    stream: _BoundedGzip | None = None  # a .nii.gz, read through a bound
    end: int = 0  # where the voxels end, in the inflated stream


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
    stream = None
    try:
        if path.name.lower().endswith(".nii.gz"):
            image, stream = _load_gzip(path)
        else:
            image = nib.load(str(path))
    except DataError:
        raise
    except FileNotFoundError as exc:
        raise DataError(f"NIfTI file not found: {path}.") from exc
    except Exception as exc:  # nibabel raises many types on corrupt bytes; each is the file's fault
        raise DataError(f"{path}: not a readable NIfTI file, the header is truncated or corrupt "
                        f"({type(exc).__name__}: {exc}).") from exc
    try:
        return _plan_image(path, image, stream)
    except BaseException:
        if stream is not None:
            stream.close()
        raise


def _plan_image(path: Path, image: nib.spatialimages.SpatialImage, stream: _BoundedGzip | None) -> _Plan:
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
    stored_bytes = math.prod(int(n) for n in shape) * stored.itemsize
    _check_data_fits(image, path, stored_bytes)
    end = int(getattr(image.dataobj, "offset", 0) or 0) + stored_bytes
    if stream is not None:
        stream.limit = end + GZIP_SLACK_BYTES
        stream.described = (f"its header describes ({end:,} bytes of header and voxels, plus {GZIP_SLACK_BYTES:,} "
                            "bytes of slack)")
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
                 None if identity else slope, None if identity else inter, stream, end)


def _read(plan: _Plan) -> np.ndarray:
    """The voxels as a `(C, z, y, x)` view (flips and transposes only; the caller copies once)."""
    try:
        if plan.slope is None and plan.inter is None:
            data = np.asanyarray(plan.image.dataobj)
        else:
            data = np.asarray(plan.image.dataobj, dtype=np.float32)
        if plan.stream is not None:
            plan.stream.check_end(plan.end)
    except DataError:
        raise
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
    try:
        out = np.ascontiguousarray(_read(plan), dtype=plan.dtype)
    finally:
        _close(plan)
    check_finite(out, plan.path, allow_nonfinite)
    return _volume(out, plan, str(plan.path), scl_slope=plan.slope, scl_inter=plan.inter)


def read_nifti_channels(paths: Sequence[str | Path], *, allow_nonfinite: bool = False) -> Volume:
    """Stack several NIfTI files on one grid (e.g. T1, T2, FLAIR) as the channels of one volume, in order.

    Grids are compared from the headers before any voxel is read; a different shape or affine is a DataError.
    """
    if not paths:
        raise DataError("read_nifti_channels: no files given; pass the NIfTI paths to stack as channels.")
    plans: list[_Plan] = []
    try:
        for p in paths:
            plans.append(_plan(Path(p)))
        return _stack(plans, allow_nonfinite)
    finally:
        for plan in plans:
            _close(plan)


def _close(plan: _Plan) -> None:
    if plan.stream is not None:
        plan.stream.close()


def _stack(plans: list[_Plan], allow_nonfinite: bool) -> Volume:
    """The channels of `plans` stacked, after checking that they share one grid."""
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

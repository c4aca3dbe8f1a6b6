"""TIFF images and multipage stacks -> `(C, H, W)` (pages as channels, a 2.5D slice stack) or `(C, D, H, W)`.

tifffile names the axes of a series (`QYX`, `ZYX`, `YXS`, `ZCYX`, ...). Samples (`S`, e.g. RGB) and ImageJ
channels (`C`) are channels; every other axis besides Y and X is a page axis. By default pages (then samples)
become channels, the 2.5D layout; with `as_volume=True` pages become D and samples/ImageJ channels stay C.
Spacing comes from the resolution tags (and ImageJ `unit`/`spacing`) in millimetres when the unit is known.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from medzoo.datasets.readers.registry import Volume, check_array_bytes, check_finite, make_volume
from medzoo.errors import DataError
from medzoo.transforms.layout import to_channel_first

CHANNEL_AXES = "SC"
# Millimetres per unit, for TIFF ResolutionUnit values and ImageJ `unit` strings.
UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 1e-3, "inch": 25.4, "cm": 10.0, "centimeter": 10.0, "mm": 1.0,
           "millimeter": 1.0, "um": 1e-3, "micron": 1e-3, "µm": 1e-3, "\\u00B5m": 1e-3, "nm": 1e-6}


def _import_tifffile():
    try:
        import tifffile
    except ImportError as exc:
        raise DataError("reading TIFF stacks needs tifffile: pip install tifffile") from exc
    return tifffile


def _spacing(tif, page) -> tuple[float | None, float | None, float | None]:
    """(slice, row, column) spacing in mm, None where the file does not say."""
    imagej = tif.imagej_metadata or {}
    unit = page.tags.get("ResolutionUnit")
    scale = UNIT_MM.get(int(unit.value)) if unit is not None else None
    scale = UNIT_MM.get(str(imagej.get("unit", "")).lower(), scale)
    if scale is None:
        return None, None, None

    def size(tag: str) -> float | None:
        found = page.tags.get(tag)
        if found is None:
            return None
        numerator, denominator = found.value
        return scale * denominator / numerator if numerator else None

    depth = imagej.get("spacing")
    return (scale * float(depth) if depth else None), size("YResolution"), size("XResolution")


def _check_complete(tif, series, path: Path) -> None:
    # A page whose strips run past the end of the file was cut short; tifffile would decode what is there
    # (leaving the rest zero) or fail inside a codec with an error that does not name the file.
    size = tif.filehandle.size
    for page in series.pages:
        if page is None:
            continue
        ends = [offset + count for offset, count in zip(page.dataoffsets, page.databytecounts) if count]
        if ends and max(ends) > size:
            raise DataError(f"{path}: truncated TIFF, page {page.index} needs bytes up to {max(ends):,} but the "
                            f"file has {size:,}. Re-export or re-download it.")


class _Problems(logging.Handler):
    """Collects what tifffile logs while reading: it reports a broken page chain only as a log record."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def read_tiff(path: str | Path, *, as_volume: bool = False, series: int = 0,
              allow_nonfinite: bool = False) -> Volume:
    """Read a TIFF page or stack: `(pages x samples, H, W)`, or `(samples, pages, H, W)` with `as_volume=True`."""
    tifffile = _import_tifffile()
    path = Path(path)
    problems = _Problems()
    logger = logging.getLogger("tifffile")
    logger.addHandler(problems)
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise DataError(f"{path}: not a readable TIFF, no image pages found (truncated or corrupt).")
            if not 0 <= series < len(tif.series):
                raise DataError(f"{path}: has {len(tif.series)} image series; series={series} does not exist.")
            found = tif.series[series]
            _check_complete(tif, found, path)
            check_array_bytes(math.prod(int(n) for n in found.shape) * found.dtype.itemsize, path,
                              f"series shape {found.shape} of {found.dtype}")
            array, axes = found.asarray(), found.axes
            spacing = _spacing(tif, found.pages[0] or tif.pages[0])
            count = len(tif.series)
    except DataError:
        raise
    except Exception as exc:  # tifffile and its codecs raise many types on damaged files; each is the file's fault
        raise DataError(f"{path}: not a readable TIFF, truncated or corrupt ({type(exc).__name__}: {exc}).") from exc
    finally:
        logger.removeHandler(problems)
    errors = [r.getMessage() for r in problems.records if r.levelno >= logging.ERROR]
    if errors:
        # e.g. a truncated file whose later pages are gone: tifffile would return the first page(s) only.
        raise DataError(f"{path}: damaged TIFF, truncated or corrupt ({'; '.join(errors)}). "
                        "Re-export or re-download it.")
    notes = [r.getMessage() for r in problems.records if r.levelno < logging.ERROR]
    if axes[-2:] != "YX" and not (axes.endswith("YXS") and len(axes) >= 3):
        raise DataError(f"{path}: unexpected TIFF axes '{axes}' (shape {array.shape}); expected ...YX or ...YXS.")
    check_finite(array, path, allow_nonfinite)
    channel_axes = [i for i, a in enumerate(axes) if a in CHANNEL_AXES]
    page_axes = [i for i, a in enumerate(axes) if a not in CHANNEL_AXES + "YX"]
    y, x = axes.index("Y"), axes.index("X")
    height, width = array.shape[y], array.shape[x]
    if len(channel_axes) == 1 and not page_axes:
        # A single RGB/multisample page: the usual HWC -> CHW move.
        out = to_channel_first(array, channel_axes[0])
    elif not channel_axes:
        out = array.reshape(-1, height, width)
    else:
        order = (channel_axes + page_axes if as_volume else page_axes + channel_axes) + [y, x]
        out = np.ascontiguousarray(array.transpose(order)).reshape(-1, height, width)
    pages = int(np.prod([array.shape[i] for i in page_axes], dtype=np.int64))
    if as_volume:
        out = out.reshape(-1, pages, height, width)
        return make_volume(out, path, spacing, None, axes=axes, pages=pages, series_count=count, notes=notes)
    return make_volume(out, path, spacing[1:], None, axes=axes, pages=pages, series_count=count, notes=notes)

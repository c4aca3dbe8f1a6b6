"""2D image files (JPEG, PNG, BMP, GIF; TIFF when asked for by name) decoded with Pillow to uint8, with grayscale
detection: `decode_image` (H x W x C, what image folders store) and `read_image`, the `image` reader (C x H x W).

TIFF has two readers. `reader_for` gives `.tif`/`.tiff` to the `tiff` reader (tifffile: every page, the stored
dtype, spacing from the tags). Image folders (`IMAGE_EXTENSIONS`) decode them here instead, as one uint8 page,
exactly as they always have; `read_volume(path, reader="image")` does the same for one file.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from medzoo.datasets.readers.registry import Volume, make_volume
from medzoo.errors import DataError

# What the `image` reader claims in READERS (`reader_for` by suffix). Pillow decodes GIF too.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
# What image folders (and `medzoo predict`'s image path) decode with `decode_image`: TIFF included (one Pillow
# page), GIF not (a folder's .gif files have always been skipped; adding them would change its data).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})
# An image whose header claims more pixels than this is refused (a decompression bomb, not an MRI slice).
MAX_PIXELS = 64_000_000


@dataclass(frozen=True)
class DecodedImage:
    """A decoded image: `pixels` is H x W x C uint8; `stored_gray` says R=G=B in an RGB file."""

    pixels: np.ndarray
    mode: str
    stored_gray: bool


def decode_image(path: Path) -> DecodedImage:
    """Decode `path` to uint8 HWC; an RGB file whose three channels are equal comes back with one channel."""
    try:
        if path.stat().st_size == 0:
            raise DataError(f"{path}: empty file (0 bytes), cut off by a failed copy or download. Replace or "
                            "delete it, or set data.on_error=skip to skip unreadable files.")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.width * image.height > MAX_PIXELS:
                    raise DataError(f"{path}: header claims {image.width}x{image.height} pixels, more than "
                                    f"{MAX_PIXELS:,}; refusing to decode (possible decompression bomb).")
                mode = image.mode
                _check_tiff_complete(image, path)
                image.load()
                pixels = _to_uint8(image)
    except DataError:
        raise
    except Exception as exc:  # Pillow raises many types on damaged files (and the bomb warning, made an error)
        raise DataError(f"{path}: cannot decode image ({type(exc).__name__}: {exc}). "
                        "Replace or delete the file, or set data.on_error=skip to skip unreadable files.") from exc
    if pixels.ndim == 2:
        return DecodedImage(pixels[..., None], mode, stored_gray=False)
    stored_gray = bool(np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 1], pixels[..., 2]))
    return DecodedImage(pixels[..., :1] if stored_gray else pixels, mode, stored_gray)


def read_image(path: str | Path) -> Volume:
    """Read a 2D image file as a uint8 `(C, H, W)` Volume (`decode_image`'s pixels, channels first; no spacing)."""
    path = Path(path)
    decoded = decode_image(path)
    array = np.ascontiguousarray(np.moveaxis(decoded.pixels, -1, 0))
    return make_volume(array, path, None, mode=decoded.mode, stored_gray=decoded.stored_gray)


def _check_tiff_complete(image: Image.Image, path: Path) -> None:
    """A TIFF whose strips (or tiles) do not cover the image, or run past the end of the file, is cut short or
    corrupt: Pillow (through libtiff) would decode what is there and leave the rest black, without an error."""
    if image.format != "TIFF":
        return
    tags = image.tag_v2
    tiled = 324 in tags
    offsets, counts = (tags.get(324, ()), tags.get(325, ())) if tiled else (tags.get(273, ()), tags.get(279, ()))
    planes = int(tags.get(277, 1)) if tags.get(284, 1) == 2 else 1  # planar configuration 2: one set per sample
    if tiled:
        across = math.ceil(image.width / max(1, int(tags.get(322, image.width))))
        expected = across * math.ceil(image.height / max(1, int(tags.get(323, image.height)))) * planes
    else:
        expected = math.ceil(image.height / max(1, int(tags.get(278, image.height)))) * planes
    size = path.stat().st_size
    ends = [int(offset) + int(count) for offset, count in zip(offsets, counts)]
    problem = None
    if min(len(offsets), len(counts)) < expected:
        problem = (f"{min(len(offsets), len(counts))} {'tile' if tiled else 'strip'}(s) for a {image.width}x"
                   f"{image.height} image that needs {expected}")
    elif ends and max(ends) > size:
        problem = f"its image data needs bytes up to {max(ends):,} but the file has {size:,}"
    if problem:
        raise DataError(f"{path}: truncated or corrupt TIFF: {problem}. Replace or delete the file, or set "
                        "data.on_error=skip to skip unreadable files.")


def _to_uint8(image: Image.Image) -> np.ndarray:
    if image.mode in ("L", "RGB"):
        return np.asarray(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = float(array.max()) or 1.0
        array *= 255.0 / top  # in place: a large 16-bit image is not copied again
        return np.rint(array, out=array).astype(np.uint8)
    return np.asarray(image.convert("RGB"))

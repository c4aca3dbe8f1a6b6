"""report.html: a Jinja2 template filled with a run's content, one self-contained file. Every picture is a
base64 data URI and the style sits in the page, so the file opens anywhere, offline, without medzoo."""

from __future__ import annotations

import base64
import io
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined
from PIL import Image

log = logging.getLogger(__name__)
REPORT_NAME = "report.html"
THUMB_SIZE = 112  # px, the longer side of a gallery thumbnail
MAX_PICTURE_BYTES = 8 << 20  # a PNG beside the report larger than this is left out, not embedded
MAX_SOURCE_PIXELS = 64_000_000  # an image file read for a thumbnail larger than this is left out

_ENV: Environment | None = None


def environment() -> Environment:
    """The templates shipped in medzoo/reporting/templates, autoescaped; an unknown name is an error."""
    global _ENV
    if _ENV is None:
        _ENV = Environment(loader=PackageLoader("medzoo.reporting", "templates"), autoescape=True,
                           undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        _ENV.filters["num"] = number
        _ENV.filters["pct"] = percent
    return _ENV


def render(template: str, context: dict[str, Any]) -> str:
    """The page `template` (e.g. train.html.j2) filled with `context`."""
    return environment().get_template(template).render(**context)


def write_report(run_dir: Path, template: str, build: Callable[[], dict[str, Any]]) -> Path | None:
    """Render `template` with the context `build()` gathers into run_dir/report.html. The report comes after
    the run's real outputs: any failure here is one warning and None, never a failed command."""
    try:
        page = render(template, build())
        target = run_dir / REPORT_NAME
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(page, encoding="utf-8")
        tmp.replace(target)
    except Exception as exc:  # noqa: BLE001 -- whatever breaks the report, the metrics are already written
        log.warning("%s not written (%s: %s); the run's other outputs are complete", run_dir / REPORT_NAME,
                    type(exc).__name__, exc)
        return None
    log.info("report -> %s", target)
    return target


# --- values --------------------------------------------------------------------------------------------
def number(value: Any, digits: int = 4) -> str:
    """A metric as text: floats to `digits` significant places, None and NaN as a dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def percent(value: Any) -> str:
    """A share (0..1) as a percentage, None as a dash."""
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}\u00a0%"


# --- pictures ------------------------------------------------------------------------------------------
def data_uri(png: bytes) -> str:
    """PNG bytes as a data URI for an <img src>."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def png_file_uri(path: Path) -> str | None:
    """A PNG file (a plot beside the report) as a data URI; None when it is absent or too large."""
    if not path.is_file() or path.stat().st_size > MAX_PICTURE_BYTES:
        return None
    data = path.read_bytes()
    return data_uri(data) if data.startswith(b"\x89PNG") else None


def _encode(picture: Image.Image, size: int) -> str:
    picture.thumbnail((size, size))
    if max(picture.size) < size:  # a 28 px MedMNIST image: enlarged with visible pixels
        scale = max(1, size // max(picture.size))
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return data_uri(out.getvalue())


def array_thumbnail(image: np.ndarray, size: int = THUMB_SIZE) -> str:
    """A channel-first sample (C x H x W, or C x D x H x W: its middle slice) as a PNG data URI: three
    channels as colour, otherwise the first channel in grey, stretched to its own range."""
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 4:
        array = array[:, array.shape[1] // 2]
    if array.ndim == 2:
        array = array[None]
    array = array if array.shape[0] == 3 else array[:1]
    low, high = float(np.nanmin(array)), float(np.nanmax(array))
    scaled = np.nan_to_num((array - low) / (high - low) * 255 if high > low else np.zeros_like(array))
    pixels = np.clip(scaled, 0, 255).astype(np.uint8)
    picture = Image.fromarray(pixels[0]) if pixels.shape[0] == 1 else Image.fromarray(pixels.transpose(1, 2, 0))
    return _encode(picture, size)


def file_thumbnail(path: Path, size: int = THUMB_SIZE) -> str | None:
    """An image file as a PNG data URI thumbnail; None when it cannot be read."""
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_SOURCE_PIXELS:
                return None
            image.draft("L", (size, size))
            picture = image.convert("L" if image.mode in ("L", "I;16", "I", "F", "1") else "RGB")
            return _encode(picture, size)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None

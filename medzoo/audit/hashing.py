"""Read and decode each file once into what the audit compares: byte digest, header facts, perceptual hashes and a
normalised grayscale thumbnail."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import imagehash
import numpy as np
from PIL import Image, UnidentifiedImageError

from medzoo.audit.settings import AuditSettings
from medzoo.datasets.folder_scan import FileRecord
from medzoo.datasets.images import MAX_PIXELS
from medzoo.progress import progress

HIGH_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})


@dataclass(frozen=True)
class ImageFacts:
    """What the audit knows about one file; `error` is set when it could not be read or decoded."""

    key: str
    split: str
    label: int
    file_size: int
    sha256: str | None
    width: int | None = None
    height: int | None = None
    mode: str | None = None
    format: str | None = None
    error: str | None = None

    @property
    def readable(self) -> bool:
        """True when the image decoded."""
        return self.error is None


@dataclass
class Fingerprints:
    """Per-file facts plus row-aligned arrays: unit-norm thumbnails and bit-packed perceptual hashes."""

    facts: list[ImageFacts]
    thumbs: np.ndarray  # (N, S*S) float32, zero mean and unit norm; all zeros when unreadable or flat
    phash: np.ndarray  # (N, words) uint64
    dhash: np.ndarray  # (N, words) uint64

    @property
    def readable(self) -> np.ndarray:
        """Boolean mask of decoded files."""
        return np.array([f.readable for f in self.facts], dtype=bool)


@dataclass(frozen=True)
class FileFingerprint:
    """One file's facts with its thumbnail and packed hashes (None when it did not decode)."""

    facts: ImageFacts
    thumb: np.ndarray | None = None
    phash: np.ndarray | None = None
    dhash: np.ndarray | None = None


def fingerprint_records(records: Sequence[FileRecord], settings: AuditSettings) -> Fingerprints:
    """Fingerprint every record in parallel threads (JPEG decoding and sha256 release the GIL)."""
    with ThreadPoolExecutor(max_workers=settings.workers) as pool:
        done = pool.map(lambda record: fingerprint_file(record, settings), records)
        decoded = list(progress(done, len(records), "audit hashing", "files", settings.progress))
    n, pixels = len(decoded), settings.thumb_size ** 2
    words = -(-settings.hash_size ** 2 // 64)
    thumbs = np.zeros((n, pixels), np.float32)
    phash, dhash = np.zeros((n, words), np.uint64), np.zeros((n, words), np.uint64)
    for row, item in enumerate(decoded):
        if item.thumb is not None:
            thumbs[row], phash[row], dhash[row] = item.thumb, item.phash, item.dhash
    return Fingerprints([item.facts for item in decoded], thumbs, phash, dhash)


def fingerprint_file(record: FileRecord, settings: AuditSettings) -> FileFingerprint:
    """One file's fingerprint; never raises for a bad file (the error is recorded in its facts)."""
    split = record.key.split("/", 1)[0]
    try:
        data = record.path.read_bytes()
    except OSError as exc:
        return FileFingerprint(ImageFacts(record.key, split, record.label, 0, None, error=f"cannot read: {exc}"))
    base = dict(key=record.key, split=split, label=record.label, file_size=len(data),
                sha256=hashlib.sha256(data).hexdigest())
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height, mode, fmt = image.width, image.height, image.mode, image.format
            if width * height > MAX_PIXELS:
                raise ValueError(f"header claims {width}x{height} pixels, more than {MAX_PIXELS:,} "
                                 "(possible decompression bomb)")
            # JPEG only: let libjpeg decode at 1/2..1/8 scale straight to luminance; a thumbnail needs no more.
            image.draft("L", (settings.draft_size, settings.draft_size))
            gray = _grayscale(image)
        thumb = _thumbnail(gray, settings.thumb_size)
        phash = _pack(imagehash.phash(gray, settings.hash_size).hash)
        dhash = _pack(imagehash.dhash(gray, settings.hash_size).hash)
    # An audit exists to report broken files, so whatever a decoder raises is recorded, never propagated.
    except UnidentifiedImageError:
        return FileFingerprint(ImageFacts(**base, error="cannot decode: not a recognised image format"))
    except Exception as exc:
        return FileFingerprint(ImageFacts(**base, error=f"cannot decode: {type(exc).__name__}: {exc}"))
    return FileFingerprint(ImageFacts(**base, width=width, height=height, mode=mode, format=fmt), thumb, phash, dhash)


def _grayscale(image: Image.Image) -> Image.Image:
    """8-bit luminance; 16-bit and float images are stretched to 0..255 rather than clipped."""
    if image.mode not in HIGH_BIT_MODES:
        return image.convert("L")
    array = np.asarray(image, dtype=np.float64)
    low, span = float(array.min()), float(np.ptp(array)) or 1.0
    return Image.fromarray(np.round((array - low) * (255.0 / span)).astype(np.uint8))


def _thumbnail(gray: Image.Image, size: int) -> np.ndarray:
    """A size x size thumbnail as a zero-mean unit vector, so a dot product is the Pearson correlation."""
    thumb = np.asarray(gray.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32).ravel()
    thumb = thumb - thumb.mean()
    norm = float(np.linalg.norm(thumb))
    # A flat image has no correlation with anything; it can still be an exact duplicate.
    return thumb / norm if norm > 1e-3 else np.zeros_like(thumb)


def _pack(bits: np.ndarray) -> np.ndarray:
    """Hash bits packed into little-endian uint64 words, for XOR + popcount distances."""
    packed = np.packbits(np.asarray(bits, dtype=bool).ravel())
    packed = np.concatenate([packed, np.zeros(-len(packed) % 8, np.uint8)])
    return packed.view(np.uint64)

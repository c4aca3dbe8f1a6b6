"""Exact duplicates (equal sha256) and near duplicates (perceptual-hash candidates confirmed by pixel correlation)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from medzoo.audit.align import aligned_correlation
from medzoo.audit.hashing import Fingerprints
from medzoo.audit.settings import AuditSettings

ROW_BLOCK = 256  # rows of the all-pairs distance matrix computed at once: 256 x N x words uint64 stays small
PAIR_BLOCK = 4096  # thumbnail pairs correlated at once (two 4096 x S*S float32 blocks)


@dataclass(frozen=True)
class Pair:
    """Two files showing the same image; `a`, `b` index the fingerprints, ordered so key(a) < key(b)."""

    a: int
    b: int
    kind: str  # "exact" (byte-identical) or "near" (same picture, different bytes)
    correlation: float  # Pearson correlation of the thumbnails; 1.0 for exact pairs
    aligned: float  # the same after aligning the framing (see align.py); 1.0 for exact pairs
    phash_distance: int
    label_conflict: bool
    cross_split: bool


@dataclass
class Duplicates:
    """Every duplicate pair, the duplicate groups (connected components) and how many candidates were checked."""

    pairs: list[Pair]
    groups: list[list[int]]
    candidates: int
    aligned: int


def find_duplicates(prints: Fingerprints, settings: AuditSettings) -> Duplicates:
    """Exact pairs, then hash candidates confirmed by pixel similarity, completed inside each group."""
    exact = exact_pairs([f.sha256 for f in prints.facts])
    candidates = candidate_pairs(prints.phash, prints.dhash, prints.readable,
                                 settings.phash_max_distance, settings.dhash_max_distance)
    n = len(prints.facts)
    exact_codes = np.array([a * n + b for a, b in exact], np.int64)
    candidates = candidates[~np.isin(candidates[:, 0] * n + candidates[:, 1], exact_codes)]
    near, checked = confirm(prints, candidates, settings)
    groups = connected_groups(n, [*exact, *near])
    # Hashes can miss a pair whose partners they found through a third file; test every pair inside a group so
    # a group of copies is listed completely, still gated by the same pixel tests.
    readable = prints.readable
    inside = np.array([(a, b) for group in groups for i, a in enumerate(group) for b in group[i + 1:]
                       if (a, b) not in exact and (a, b) not in near and readable[a] and readable[b]],
                      dtype=np.int64).reshape(-1, 2)
    more, extra = confirm(prints, inside, settings)
    near.update(more)
    pairs = [_pair(prints, a, b, "exact", (1.0, 1.0)) for a, b in exact]
    pairs += [_pair(prints, a, b, "near", scores) for (a, b), scores in near.items()]
    keys = [f.key for f in prints.facts]
    pairs.sort(key=lambda p: (keys[p.a], keys[p.b]))
    return Duplicates(pairs, groups, len(candidates) + len(inside), checked + extra)


def confirm(prints: Fingerprints, pairs: np.ndarray, settings: AuditSettings
            ) -> tuple[dict[tuple[int, int], tuple[float, float]], int]:
    """The pairs that show the same picture, with (correlation, aligned correlation), and how many were aligned.

    Thumbnail correlation is a cheap screen; only pairs above `min_correlation` are aligned, and
    `min_aligned_correlation` decides."""
    correlation = pair_correlations(prints.thumbs, pairs)
    keep = correlation >= settings.min_correlation
    screened = [(a, b, c) for (a, b), c in zip(pairs[keep].tolist(), correlation[keep].tolist())]
    thumbs = prints.thumbs.reshape(len(prints.thumbs), settings.thumb_size, settings.thumb_size)
    # A plain loop: the fit is many tiny numpy calls, which threads only slow down (GIL and BLAS contention).
    aligned = [aligned_correlation(thumbs[a], thumbs[b]) for a, b, _ in screened]
    same = {(a, b): (c, s) for (a, b, c), s in zip(screened, aligned) if s >= settings.min_aligned_correlation}
    return same, len(screened)


def exact_pairs(digests: Sequence[str | None]) -> set[tuple[int, int]]:
    """Every pair (i < j) of files with the same byte digest; files that could not be read have None."""
    by_digest: dict[str, list[int]] = defaultdict(list)
    for index, digest in enumerate(digests):
        if digest is not None:
            by_digest[digest].append(index)
    return {(a, b) for members in by_digest.values() for i, a in enumerate(members) for b in members[i + 1:]}


def hamming(hashes: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances between rows a and b of bit-packed hashes."""
    return np.bitwise_count(hashes[a] ^ hashes[b]).sum(axis=-1, dtype=np.int64)


def candidate_pairs(phash: np.ndarray, dhash: np.ndarray, readable: np.ndarray, phash_max: int,
                    dhash_max: int) -> np.ndarray:
    """Pairs (i < j) of readable files within `phash_max` bits of phash or `dhash_max` bits of dhash.

    All pairs are compared with XOR + popcount in blocks of rows: 3,264 files are 5.3 M pairs, a fraction of a
    second; beyond ~100k files, multi-index hashing would be the next step."""
    n = len(phash)
    found = []
    columns = np.arange(n)
    for start in range(0, n, ROW_BLOCK):
        rows = np.arange(start, min(start + ROW_BLOCK, n))
        near_p = np.bitwise_count(phash[rows, None] ^ phash[None]).sum(axis=-1) <= phash_max
        near_d = np.bitwise_count(dhash[rows, None] ^ dhash[None]).sum(axis=-1) <= dhash_max
        mask = (near_p | near_d) & (columns[None] > rows[:, None]) & readable[None] & readable[rows, None]
        i, j = np.nonzero(mask)
        found.append(np.stack([rows[i], j], axis=1))
    return np.concatenate(found) if found else np.zeros((0, 2), np.int64)


def pair_correlations(thumbs: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Pearson correlation of the thumbnails of each pair (rows are zero-mean unit vectors: a dot product)."""
    out = np.empty(len(pairs), np.float32)
    for start in range(0, len(pairs), PAIR_BLOCK):
        block = pairs[start:start + PAIR_BLOCK]
        out[start:start + len(block)] = np.einsum("ij,ij->i", thumbs[block[:, 0]], thumbs[block[:, 1]])
    return out


def connected_groups(n: int, edges: Iterable[tuple[int, int]]) -> list[list[int]]:
    """Connected components with two or more members (union-find), each sorted, sorted by first member."""
    parent = list(range(n))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    members: dict[int, list[int]] = defaultdict(list)
    for x in range(n):
        members[root(x)].append(x)
    return sorted((group for group in members.values() if len(group) > 1), key=lambda g: g[0])


def _pair(prints: Fingerprints, a: int, b: int, kind: str, scores: tuple[float, float]) -> Pair:
    fa, fb = prints.facts[a], prints.facts[b]
    if fb.key < fa.key:
        a, b, fa, fb = b, a, fb, fa
    distance = int(hamming(prints.phash, np.array([a]), np.array([b]))[0])
    return Pair(a, b, kind, round(scores[0], 4), round(scores[1], 4), distance, fa.label != fb.label,
                fa.split != fb.split)

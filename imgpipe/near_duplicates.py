"""Near-duplicate images: a 64-bit perceptual fingerprint and groups of close fingerprints.

Exact pixel hashes miss the copies that leak most often between a training and a test set:
the same photo re-encoded, resized, shifted by a pixel or brightened. A DCT hash (pHash)
keeps only the coarse structure of an image (the 8x8 lowest frequencies of a 32x32 grey
version, one bit each: above or below their median), so such copies land a few bits apart,
and unrelated images about 32 bits apart.

Finding every pair within ``distance`` bits among n fingerprints must not compare all n^2/2
pairs (60,000 images are 1.8e9 pairs). Multi-index hashing: cut the 64 bits into m chunks; by
the pigeonhole principle two fingerprints within ``distance`` bits differ in at most
``distance // m`` bits in at least one chunk. So each fingerprint only looks up, per chunk,
the chunk values within that radius of its own in a table, and the few candidates found are
checked with a popcount. Union-find then joins the pairs into groups.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from itertools import combinations

import numpy as np
from PIL import Image

HASH_BITS = 64
HASH_SIDE = 32  # the grey image the DCT is taken of
LOW_FREQUENCIES = 8  # 8x8 coefficients, one bit each
HEX_DIGITS = HASH_BITS // 4
# Far above any useful threshold: unrelated images sit near 32 bits apart, and the search's
# cost grows with the radius it has to probe.
MOST_DISTANCE = 16
MIN_CHUNKS = 3  # 22-bit chunks: a table of 4M counts is the largest worth its memory
# The leakage figures split writes and evaluate puts in the metrics, under these names.
LEAKAGE_FRACTION = "test_near_duplicates_in_train"  # of the test images
LEAKAGE_COUNT = "test_near_duplicates_in_train_count"
# Candidate pairs checked at once: bounds memory whatever the number of images.
BATCH_PAIRS = 4_000_000
# A checked candidate costs about this many table lookups (measured with numpy 2 on 2 cores).
CANDIDATE_COST = 5


@cache
def _dct_rows() -> np.ndarray:
    """The first LOW_FREQUENCIES rows of the (unnormalized) DCT-II matrix of size HASH_SIDE."""
    k = np.arange(LOW_FREQUENCIES)[:, None]
    n = np.arange(HASH_SIDE)[None, :]
    return np.cos(np.pi * k * (2 * n + 1) / (2 * HASH_SIDE))


def dct_hash(image: Image.Image) -> int:
    """The 64-bit perceptual hash of ``image`` (any mode and size), as an integer.

    Two matrix products give the low-frequency block of the 2-D DCT directly, so the cost is
    that of the 32x32 grey resize. Same bits as the usual pHash (median of the 8x8 block,
    the DC term included).
    """
    grey = image.convert("L").resize((HASH_SIDE, HASH_SIDE), Image.Resampling.LANCZOS)
    pixels = np.asarray(grey, dtype=np.float64)
    rows = _dct_rows()
    low = rows @ pixels @ rows.T
    bits = (low > np.median(low)).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def to_hex(value: int) -> str:
    return f"{value:0{HEX_DIGITS}x}"


def from_hex(values) -> np.ndarray:
    """Hex fingerprints (as the manifest stores them) to an array of unsigned 64-bit ints."""
    return np.array([int(v, 16) for v in values], dtype=np.uint64)


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances between two arrays of fingerprints, element by element."""
    return np.bitwise_count(np.bitwise_xor(a, b)).astype(np.int64)


@dataclass(frozen=True)
class Pairs:
    """Index pairs (first < second) of fingerprints within the distance, and their distances."""

    first: np.ndarray
    second: np.ndarray
    distance: np.ndarray

    def __len__(self) -> int:
        return len(self.first)


def _chunks(m: int) -> list[tuple[int, int]]:
    """(shift, width) of m near-equal chunks covering the 64 bits."""
    widths = [HASH_BITS // m + (i < HASH_BITS % m) for i in range(m)]
    shifts = np.cumsum([0, *widths[:-1]])
    return [(int(s), w) for s, w in zip(shifts, widths, strict=True)]


def _ball(width: int, radius: int) -> int:
    return sum(math.comb(width, r) for r in range(radius + 1))


def choose_chunks(n: int, distance: int) -> int:
    """The number of chunks with the least expected work for n fingerprints.

    Work per chunk: each fingerprint probes every value within the radius (the ball's size)
    and meets about n / 2^width random others per probe. Chunks wider than 22 bits would need
    too large a table; more than distance + 1 chunks only add lookups.
    """

    def work(m: int) -> float:
        width = HASH_BITS // m
        probes = _ball(width, distance // m)
        return m * probes * n * (1 + CANDIDATE_COST * n / 2**width)

    # Any m is exact (pigeonhole); three is the fewest whose chunks fit a table.
    usable = range(MIN_CHUNKS, max(distance + 1, MIN_CHUNKS) + 1)
    return min(usable, key=work)


def _masks(width: int, radius: int) -> np.ndarray:
    """Every value of ``width`` bits with at most ``radius`` bits set."""
    masks = [0]
    for r in range(1, radius + 1):
        masks.extend(sum(1 << b for b in bits) for bits in combinations(range(width), r))
    return np.array(masks, dtype=np.int64)


def _probe(keys, order, starts, counts, mask, hashes, distance, found) -> None:
    """Candidates whose chunk equals each key xor ``mask``; keep the verified pairs."""
    wanted = keys ^ mask
    hits = counts[wanted]
    askers = np.flatnonzero(hits)  # most keys meet nobody: the rest of the work is on few
    if len(askers) == 0:
        return
    hits = hits[askers]
    wanted = wanted[askers]
    # Bounded batches, so a crowded chunk value cannot ask for gigabytes at once.
    cum = np.cumsum(hits)
    cuts = np.searchsorted(cum, np.arange(BATCH_PAIRS, int(cum[-1]), BATCH_PAIRS), "right")
    for part in np.split(np.arange(len(askers)), cuts):
        if len(part) == 0:
            continue
        c = hits[part]
        first = np.repeat(askers[part], c)
        offsets = np.arange(len(first)) - np.repeat(np.cumsum(c) - c, c)
        second = order[np.repeat(starts[wanted[part]], c) + offsets]
        keep = first < second
        first, second = first[keep], second[keep]
        d = distances(hashes[first], hashes[second])
        close = d <= distance
        found.append((first[close], second[close], d[close]))


def near_pairs(hashes: np.ndarray, distance: int) -> Pairs:
    """Every pair of ``hashes`` (uint64) within ``distance`` bits, each pair once, sorted."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    n = len(hashes)
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    if n > 1 and distance >= 0:
        m = choose_chunks(n, distance)
        for shift, width in _chunks(m):
            keys = ((hashes >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int64)
            order = np.argsort(keys, kind="stable")
            # 32-bit tables: half the memory traffic of the random lookups that dominate.
            counts = np.bincount(keys, minlength=1 << width).astype(np.int32)
            starts = (np.cumsum(counts) - counts).astype(np.int64)
            for mask in _masks(width, distance // m):
                _probe(keys, order, starts, counts, mask, hashes, distance, found)
    if not found:
        empty = np.zeros(0, dtype=np.int64)
        return Pairs(empty, empty, empty)
    first = np.concatenate([f for f, _, _ in found])
    second = np.concatenate([s for _, s, _ in found])
    d = np.concatenate([x for _, _, x in found])
    # A pair close in several chunks is found once per chunk.
    codes, index = np.unique(first * n + second, return_index=True)
    return Pairs(codes // n, codes % n, d[index])


def union_groups(n: int, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The smallest member index of each item's connected group (edges first[i]-second[i])."""
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]  # path halving keeps trees flat
            i = parent[i]
        return i

    for a, b in zip(first.tolist(), second.tolist(), strict=True):
        ra, rb = root(a), root(b)
        if ra != rb:
            # The smaller index is the root, so labels do not depend on the edges' order.
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([root(i) for i in range(n)])

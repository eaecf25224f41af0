import io

import numpy as np
import pytest
from PIL import Image, ImageEnhance
from scipy.fft import dct

from imgpipe.near_duplicates import (
    choose_chunks,
    dct_hash,
    distances,
    from_hex,
    near_pairs,
    to_hex,
    union_groups,
)
from imgpipe.params import SplitParams

DEFAULT = SplitParams().near_duplicate_distance
# A 95% crop or a 2-pixel shift moves the low frequencies more than re-encoding does: within
# 8 bits on these photos (and about a third of 95% crops within 4 on CIFAR-10, see README).
GEOMETRIC = 8


def photo(seed: int, size: int = 128) -> Image.Image:
    """Photo-like: most energy in the lowest frequencies (1/f), plus a little sensor noise."""
    rng = np.random.default_rng(seed)
    pixels = np.zeros((size, size, 3))
    for cells, amplitude in ((2, 1.0), (4, 0.5), (8, 0.25), (16, 0.125)):
        layer = rng.normal(0, 1, (cells, cells, 3)).astype(np.float32)
        pixels += amplitude * np.stack(
            [
                np.asarray(
                    Image.fromarray(layer[..., c], "F").resize(
                        (size, size), Image.Resampling.BICUBIC
                    )
                )
                for c in range(3)
            ],
            -1,
        )
    pixels = 128 + 60 * pixels / np.abs(pixels).max() + rng.normal(0, 4, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def near_copies(image: Image.Image) -> dict[str, Image.Image]:
    width, height = image.size
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=60)
    shifted = np.pad(np.asarray(image), ((0, 0), (2, 0), (0, 0)), mode="edge")[:, :width]
    margin_x, margin_y = round(width * 0.025), round(height * 0.025)
    return {
        "jpeg_q60": Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"),
        "resized_90": image.resize((width * 9 // 10, height * 9 // 10), Image.Resampling.BILINEAR),
        "shifted_2px": Image.fromarray(shifted),
        "brighter_10": ImageEnhance.Brightness(image).enhance(1.1),
        "crop_95": image.crop((margin_x, margin_y, width - margin_x, height - margin_y)),
    }


def standardized_hash(image: Image.Image) -> int:
    """As prepare hashes: the image at the standard's size (here 32x32) first."""
    return dct_hash(image.resize((32, 32), Image.Resampling.LANCZOS))


def test_near_copies_are_within_the_default_distance_and_unrelated_photos_far_apart():
    for seed in range(3):
        original = photo(seed)
        base = standardized_hash(original)
        for name, copy in near_copies(original).items():
            distance = bin(base ^ standardized_hash(copy)).count("1")
            limit = GEOMETRIC if name in ("shifted_2px", "crop_95") else DEFAULT
            assert distance <= limit, (seed, name, distance)
    hashes = [standardized_hash(photo(seed)) for seed in range(3, 23)]
    closest = min(bin(a ^ b).count("1") for i, a in enumerate(hashes) for b in hashes[i + 1 :])
    assert closest > GEOMETRIC


def test_hash_is_the_usual_phash_and_round_trips_as_hex():
    # The reference pHash: scipy's DCT of the whole 32x32 grey image, then its 8x8 corner.
    grey = photo(2).convert("L").resize((32, 32), Image.Resampling.LANCZOS)
    low = dct(dct(np.asarray(grey, dtype=float), axis=0), axis=1)[:8, :8]
    bits = "".join("1" if c else "0" for c in (low > np.median(low)).ravel())
    assert dct_hash(photo(2)) == int(bits, 2)
    value = standardized_hash(photo(1))
    assert to_hex(value) == f"{value:016x}" and from_hex([to_hex(value)])[0] == value
    # The same bits whatever the mode: the hash is of the grey image.
    assert dct_hash(photo(1).convert("L")) == dct_hash(photo(1))


def _with_planted(n: int, planted: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**64, size=n, dtype=np.uint64)
    for source, target in rng.integers(0, n, size=(planted, 2)):
        flips = rng.choice(64, rng.integers(0, 10), replace=False)
        hashes[target] = hashes[source] ^ np.uint64(sum(1 << int(b) for b in flips))
    # Crowd a few chunk values, as real images with plain backgrounds do.
    hashes[:50] &= np.uint64(0xFFFF_FFFF_0000_0000)
    return hashes


@pytest.mark.parametrize("distance", [0, 3, 8, 16])
def test_near_pairs_equal_the_brute_force_answer(distance):
    hashes = _with_planted(1500, 300, distance)
    first, second = np.triu_indices(len(hashes), 1)
    d = distances(hashes[first], hashes[second])
    close = d <= distance
    pairs = near_pairs(hashes, distance)
    assert len(pairs) == close.sum() > 0
    assert (pairs.first == first[close]).all() and (pairs.second == second[close]).all()
    assert (pairs.distance == d[close]).all()
    assert choose_chunks(len(hashes), distance) >= 3


def test_union_groups_join_chains_and_name_each_group_by_its_first_member():
    roots = union_groups(7, np.array([5, 3, 1]), np.array([6, 5, 4]))
    assert roots.tolist() == [0, 1, 2, 3, 1, 3, 3]
    assert union_groups(3, np.array([], int), np.array([], int)).tolist() == [0, 1, 2]
    assert len(near_pairs(np.array([7], dtype=np.uint64), 4)) == 0

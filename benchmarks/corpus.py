"""A realistic photo corpus made offline: JPEGs cut from real photographs that ship with
scikit-learn, with the size and quality mix of dogs-vs-cats (about 500x375, quality 75-95).

Class ``a`` comes from one photograph and class ``b`` from the other, so the corpus is
learnable as well as decodable. Generation is seeded: the same call gives the same files.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from imgpipe.parallel import ordered_map

# (width, height) shapes seen most often in dogs-vs-cats, with their rough frequency.
SHAPES = [
    ((500, 375), 0.45),
    ((375, 500), 0.15),
    ((499, 333), 0.15),
    ((320, 240), 0.1),
    ((500, 500), 0.1),
    ((400, 300), 0.05),
]


def _photographs() -> list[Image.Image]:
    from sklearn.datasets import load_sample_images

    return [Image.fromarray(array) for array in load_sample_images().images]


def corpus_jpeg(photo: Image.Image, rng: np.random.Generator) -> bytes:
    """One JPEG: a random crop of ``photo``, flipped at random, scaled to a common shape."""
    (width, height), _ = SHAPES[rng.choice(len(SHAPES), p=[p for _, p in SHAPES])]
    scale = rng.uniform(0.35, 0.9)
    crop_w = int(photo.width * scale)
    crop_h = min(photo.height, int(crop_w * height / width))
    left = int(rng.integers(0, photo.width - crop_w + 1))
    top = int(rng.integers(0, photo.height - crop_h + 1))
    image = photo.crop((left, top, left + crop_w, top + crop_h))
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    image = image.resize((width, height), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(rng.integers(75, 96)))
    return buffer.getvalue()


_PHOTOS: list[Image.Image] = []


def _corpus_member(job: tuple[int, int]) -> tuple[str, bytes]:
    """Class folder / file name and JPEG bytes of image ``index``; seeded by (seed, index)."""
    index, seed = job
    if not _PHOTOS:  # once per worker process
        _PHOTOS.extend(_photographs())
    label = "ab"[index % len(_PHOTOS)]
    rng = np.random.default_rng([seed, index])
    return f"{label}/{label}.{index:06d}.jpg", corpus_jpeg(_PHOTOS[index % len(_PHOTOS)], rng)


def corpus_members(count: int, seed: int = 0, workers: int = 1) -> Iterator[tuple[str, bytes]]:
    """(relative path, JPEG bytes) of each corpus image, in order, the same for any workers."""
    return ordered_map(_corpus_member, ((index, seed) for index in range(count)), workers)


def make_corpus(folder: Path, count: int, seed: int = 0, workers: int = 1) -> Path:
    """``count`` JPEGs under ``folder/a`` and ``folder/b`` (a folder-of-class-folders)."""
    folder = Path(folder)
    for name, data in corpus_members(count, seed, workers):
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return folder


def make_archive(path: Path, count: int, seed: int = 0, workers: int = 1) -> Path:
    """The same corpus as one uncompressed tar laid out by class folders, as users ship it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as archive:
        for name, data in corpus_members(count, seed, workers):
            info = tarfile.TarInfo(f"photos/{name}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            archive.addfile(info, io.BytesIO(data))
    return path


def make_raw_dir(raw_dir: Path, count: int, seed: int = 0, workers: int = 1) -> Path:
    """A ``data/raw`` as the download stage leaves it for a folder source."""
    make_corpus(Path(raw_dir) / "images", count, seed, workers)
    source = {
        "kind": "corpus",
        "layout": "class_folders",
        "root": "images",
        "class_names": ["a", "b"],
    }
    (Path(raw_dir) / "source.json").write_text(json.dumps(source))
    return Path(raw_dir)

"""Shared test helpers: tiny, learnable image datasets made on the spot."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgpipe.layout import Layout

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parent.parent


def layout_of(root: Path, **paths: Path) -> Layout:
    """The contract's paths below ``root``, with the ones given moved where the test wants."""
    return replace(Layout.under(root), **paths)


def class_image(label_index: int, sample: int, size: tuple[int, int] = (24, 24)) -> Image.Image:
    """A noisy image whose bright stripe position tells its class, so a tiny CNN can learn it."""
    rng = np.random.default_rng(1000 * label_index + sample)
    width, height = size
    pixels = rng.integers(0, 60, size=(height, width, 3), dtype=np.uint8)
    band = height // 4
    top = label_index * band % (height - band + 1)
    pixels[top : top + band, :, :] = 200 + rng.integers(0, 55, size=(band, width, 3))
    return Image.fromarray(pixels, mode="RGB")


def write_class_folders(
    raw_dir: Path, classes: list[str], per_class: int, size: tuple[int, int] = (24, 24)
) -> Path:
    """data/raw in the ``class_folders`` layout that download writes, with source.json."""
    for index, name in enumerate(classes):
        folder = raw_dir / "images" / name
        folder.mkdir(parents=True, exist_ok=True)
        for sample in range(per_class):
            class_image(index, sample, size).save(folder / f"img-{sample:03d}.png")
    source = {"kind": "test", "layout": "class_folders", "root": "images", "class_names": classes}
    (raw_dir / "source.json").write_text(json.dumps(source))
    return raw_dir


@pytest.fixture
def raw_dir(tmp_path: Path) -> Path:
    return write_class_folders(tmp_path / "raw", ["circle", "square", "triangle"], per_class=20)


def tree_bytes(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` by relative path, to compare two outputs byte for byte."""
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def prepared_dir(raw_dir: Path, tmp_path: Path) -> Path:
    from imgpipe.params import PrepareParams
    from stages import prepare

    out = tmp_path / "prepared"
    prepare.run(
        PrepareParams(size=(16, 16), color="rgb", workers=1),
        layout_of(tmp_path, raw=raw_dir, prepared=out),
    )
    return out


@pytest.fixture
def split_dir(prepared_dir: Path, tmp_path: Path) -> Path:
    from imgpipe.params import SplitParams
    from stages import split

    out = tmp_path / "split"
    split.run(
        SplitParams(val=0.2, test=0.2), 7, layout_of(tmp_path, prepared=prepared_dir, split=out)
    )
    return out


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory):
    """One small model trained on the stripes, once per session, for the tests that read one.

    Read-only: a test that changes files copies what it needs, and writes below its own folder.
    """
    from tests.tiny_model import trained_project as train_tiny_project

    return train_tiny_project(tmp_path_factory.mktemp("trained"))


@pytest.fixture
def server():
    """An HTTP server on 127.0.0.1 serving only what the test puts in ``server.behaviour``."""
    from tests.local_server import LocalServer

    with LocalServer() as running:
        yield running

"""The digits source: scikit-learn's digits as PNG files, one folder per class."""

import json

import numpy as np
from PIL import Image

from stages import download
from tests.conftest import layout_of
from tests.imgpipe.sources.helpers import dl_params


def test_digits_become_png_files_one_folder_per_class(tmp_path):
    raw = tmp_path / "raw"
    summary = download.run(dl_params(source="digits"), layout_of(tmp_path, raw=raw))
    files = sorted((raw / "images").rglob("*.png"))
    assert len(files) == 1797 == summary["size"]
    assert sorted(p.name for p in (raw / "images").iterdir()) == [str(d) for d in range(10)]
    source = json.loads((raw / "source.json").read_text())
    assert source["class_names"] == [str(d) for d in range(10)]
    assert source["layout"] == "class_folders"
    assert len(source["sha256"]) == 64


def test_digit_pixels_match_scikit_learn(tmp_path):
    from sklearn.datasets import load_digits

    raw = tmp_path / "raw"
    download.run(dl_params(), layout_of(tmp_path, raw=raw))
    digits = load_digits()
    stored = np.asarray(Image.open(raw / "images" / str(digits.target[5]) / "digit-0005.png"))
    assert stored.shape == (8, 8)
    np.testing.assert_array_equal(stored, np.rint(digits.images[5] * 255 / 16).astype(np.uint8))

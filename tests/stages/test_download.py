import json

import numpy as np
from PIL import Image

from imgpipe.params import DownloadParams
from stages import download


def test_digits_become_png_files_one_folder_per_class(tmp_path):
    raw = tmp_path / "raw"
    summary = download.run(DownloadParams(source="digits"), raw)
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
    download.run(DownloadParams(), raw)
    digits = load_digits()
    stored = np.asarray(Image.open(raw / "images" / str(digits.target[5]) / "digit-0005.png"))
    assert stored.shape == (8, 8)
    np.testing.assert_array_equal(stored, np.rint(digits.images[5] * 255 / 16).astype(np.uint8))


def test_rerun_replaces_output_and_leaves_no_scratch(tmp_path):
    raw = tmp_path / "raw"
    download.run(DownloadParams(), raw)
    (raw / "stale.txt").write_text("from an older run")
    download.run(DownloadParams(), raw)
    assert not (raw / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]

import json

import numpy as np
import pytest
from PIL import Image

from imgpipe.cli import StageError
from imgpipe.params import DownloadParams, ParamsError, parse_params
from stages import download
from tests.conftest import write_class_folders


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


def test_folder_source_links_class_folders(tmp_path):
    photos = write_class_folders(tmp_path / "photos", ["cat", "dog"], per_class=3) / "images"
    raw = tmp_path / "raw"
    source = download.run(DownloadParams(source="folder", path=str(photos)), raw)
    assert source["class_names"] == ["cat", "dog"]
    assert source["size"] == 6
    copied = raw / "images" / "dog" / "img-002.png"
    assert copied.read_bytes() == (photos / "dog" / "img-002.png").read_bytes()


def test_folder_source_errors_say_what_to_do(tmp_path):
    with pytest.raises(ParamsError, match=r"download: .*needs download.path"):
        parse_params({"download": {"source": "folder"}})
    with pytest.raises(StageError, match="is not a folder"):
        download.run(DownloadParams(source="folder", path=str(tmp_path / "nope")), tmp_path / "r")
    (tmp_path / "flat").mkdir()
    with pytest.raises(StageError, match="no class sub-folders"):
        download.run(DownloadParams(source="folder", path=str(tmp_path / "flat")), tmp_path / "r")
    assert not (tmp_path / "r").exists()

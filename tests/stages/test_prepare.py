import json

import pytest

from imgpipe.cli import StageError
from imgpipe.images import decode_png_array
from imgpipe.params import PrepareParams
from imgpipe.shards import read_images, read_manifest
from stages import prepare
from tests.conftest import tree_bytes


def _run(raw_dir, tmp_path, **overrides):
    params = PrepareParams(**{"size": (16, 16), "workers": 1, **overrides})
    report = tmp_path / "reports" / "prepare.json"
    summary = prepare.run(params, raw_dir, tmp_path / "prepared", report)
    return summary, json.loads(report.read_text())


def test_images_are_standardized_into_shards_with_a_manifest(raw_dir, tmp_path):
    summary, report = _run(raw_dir, tmp_path, color="rgb", shard_size=25)
    manifest = read_manifest(tmp_path / "prepared")
    assert len(manifest) == 60 == summary["images"]["kept"]
    assert sorted(manifest["shard"].unique()) == [
        "shard-00000.tar",
        "shard-00001.tar",
        "shard-00002.tar",
    ]
    assert report["counts_after"] == {"circle": 20, "square": 20, "triangle": 20}
    for _, data in read_images(tmp_path / "prepared", manifest.head(5)):
        assert decode_png_array(data).shape == (16, 16, 3)
    info = json.loads((tmp_path / "prepared" / "info.json").read_text())
    assert info["classes"] == ["circle", "square", "triangle"]
    assert info["standard"]["channels"] == 3


def test_grayscale_gives_one_channel(raw_dir, tmp_path):
    _run(raw_dir, tmp_path, color="grayscale")
    manifest = read_manifest(tmp_path / "prepared")
    _, data = next(read_images(tmp_path / "prepared", manifest.head(1)))
    assert decode_png_array(data).shape == (16, 16, 1)


def test_bad_files_are_listed_with_reasons_not_dropped_silently(raw_dir, tmp_path):
    circle = raw_dir / "images" / "circle"
    (circle / "empty.jpg").write_bytes(b"")
    (circle / "notes.txt").write_text("not an image")
    good = (circle / "img-000.png").read_bytes()
    (circle / "truncated.png").write_bytes(good[: len(good) // 2])
    _, report = _run(raw_dir, tmp_path)
    reasons = {item["path"].split("/")[-1]: item["reason"] for item in report["rejected"]}
    assert reasons["empty.jpg"] == "empty file"
    assert "not an image" in reasons["notes.txt"]
    assert "truncated" in reasons["truncated.png"] or "corrupt" in reasons["truncated.png"]
    assert report["counts_before"]["circle"] == 23
    assert report["counts_after"]["circle"] == 20


def test_class_below_minimum_stops_with_its_name(raw_dir, tmp_path):
    for path in sorted((raw_dir / "images" / "square").iterdir())[3:]:
        path.unlink()
    with pytest.raises(StageError, match=r"'square' has 3.*prepare.min_per_class"):
        _run(raw_dir, tmp_path, min_per_class=5)
    assert not (tmp_path / "prepared").exists()


def test_exact_duplicates_share_a_group_and_conflicts_are_reported(raw_dir, tmp_path):
    images = raw_dir / "images"
    (images / "circle" / "copy.png").write_bytes((images / "circle" / "img-001.png").read_bytes())
    (images / "square" / "stolen.png").write_bytes((images / "circle" / "img-002.png").read_bytes())
    _, report = _run(raw_dir, tmp_path)
    manifest = read_manifest(tmp_path / "prepared").set_index("origin")
    assert (
        manifest.loc["images/circle/copy.png", "group"]
        == manifest.loc["images/circle/img-001.png", "group"]
    )
    assert report["duplicates"]["groups_with_copies"] == 2
    assert report["label_conflicts"] == [
        {"group": manifest.loc["images/square/stolen.png", "group"], "labels": ["circle", "square"]}
    ]


def test_output_bytes_do_not_depend_on_worker_count(raw_dir, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _run(raw_dir, one, workers=1)
    _run(raw_dir, two, workers=2)
    assert tree_bytes(one / "prepared") == tree_bytes(two / "prepared")

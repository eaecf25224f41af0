import pytest

from imgpipe.augment_ops import AugmentConfigError
from imgpipe.images import decode_png_array
from imgpipe.params import AugmentOperation, AugmentParams
from imgpipe.shards import read_images, read_manifest, read_split
from stages import augment
from tests.conftest import tree_bytes

OPERATIONS = [
    AugmentOperation(name="rotate", probability=0.9, max_left_rotation=15, max_right_rotation=15),
    AugmentOperation(name="zoom", probability=0.5, min_factor=1.0, max_factor=1.3),
    AugmentOperation(name="crop_random", probability=0.5, percentage_area=0.8),
]


def _run(prepared_dir, split_dir, out, workers=1, per_class=10, operations=OPERATIONS):
    params = AugmentParams(per_class=per_class, operations=operations, workers=workers)
    return augment.run(params, 11, prepared_dir, split_dir, out)


def test_samples_come_only_from_the_training_split(prepared_dir, split_dir, tmp_path):
    summary = _run(prepared_dir, split_dir, tmp_path / "aug")
    assert summary["per_class"] == {"circle": 10, "square": 10, "triangle": 10}
    manifest = read_manifest(tmp_path / "aug")
    train = read_split(split_dir, "train").set_index("id")
    assert set(manifest["origin"]) <= set(train.index)
    assert (manifest["label"].to_numpy() == train.loc[manifest["origin"], "label"].to_numpy()).all()
    held_out = set(read_split(split_dir, "val")["id"]) | set(read_split(split_dir, "test")["id"])
    assert not set(manifest["origin"]) & held_out


def test_augmented_images_keep_the_standard_size(prepared_dir, split_dir, tmp_path):
    _run(prepared_dir, split_dir, tmp_path / "aug")
    manifest = read_manifest(tmp_path / "aug")
    assert "crop_random" in ";".join(manifest["operations"])
    for _, data in read_images(tmp_path / "aug", manifest):
        assert decode_png_array(data).shape == (16, 16, 3)


def test_same_bytes_on_every_run_and_for_any_worker_count(prepared_dir, split_dir, tmp_path):
    _run(prepared_dir, split_dir, tmp_path / "a", workers=1)
    _run(prepared_dir, split_dir, tmp_path / "b", workers=1)
    _run(prepared_dir, split_dir, tmp_path / "c", workers=2)
    first = tree_bytes(tmp_path / "a")
    assert first == tree_bytes(tmp_path / "b") == tree_bytes(tmp_path / "c")


def test_unknown_operation_lists_the_valid_ones(prepared_dir, split_dir, tmp_path):
    with pytest.raises(AugmentConfigError, match=r"unknown operation 'spin'.*flip_left_right"):
        _run(prepared_dir, split_dir, tmp_path / "aug", operations=[AugmentOperation(name="spin")])
    assert not (tmp_path / "aug").exists()


def test_wrong_argument_lists_what_the_operation_takes(prepared_dir, split_dir, tmp_path):
    bad = AugmentOperation(name="rotate", max_left_rotation=5, max_rigth_rotation=5)
    with pytest.raises(
        AugmentConfigError,
        match=r"rotate does not take max_rigth_rotation; it takes probability, "
        r"max_left_rotation, max_right_rotation",
    ):
        _run(prepared_dir, split_dir, tmp_path / "aug", operations=[bad])
    with pytest.raises(AugmentConfigError, match=r"zoom needs min_factor, max_factor"):
        _run(prepared_dir, split_dir, tmp_path / "aug", operations=[AugmentOperation(name="zoom")])

import io
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from imgpipe.augment_ops import (
    AugmentConfigError,
    augment_image,
    build_class_operations,
    sample_seed,
)
from imgpipe.images import decode, decode_png_array
from imgpipe.params import (
    AugmentOperation,
    AugmentParams,
    ParamsError,
    PrepareParams,
    SplitParams,
    parse_params,
)
from imgpipe.shards import AUGMENTED_COLUMNS, read_images, read_manifest, read_split
from stages import augment, prepare, split
from tests.conftest import layout_of, tree_bytes, write_class_folders

OPERATIONS = [
    AugmentOperation(name="rotate", probability=0.9, max_left_rotation=15, max_right_rotation=15),
    AugmentOperation(name="zoom", probability=0.5, min_factor=1.0, max_factor=1.3),
    AugmentOperation(name="crop_random", probability=0.5, percentage_area=0.8),
]


def _run(prepared_dir, split_dir, out, preview_path=None, **settings):
    """Augment into ``out``; the preview goes to ``preview_path``, or beside ``out``."""
    options = {"per_image": 2, "operations": OPERATIONS, "workers": 1, **settings}
    layout = layout_of(
        out.parent,
        prepared=prepared_dir,
        split=split_dir,
        augmented=out,
        augment_preview=preview_path or out.parent / f"{out.name}-preview.png",
    )
    return augment.run(AugmentParams(**options), 11, layout)


def _pixels(data: bytes) -> np.ndarray:
    return decode_png_array(data)


def _images(directory, rows) -> dict[str, np.ndarray]:
    return {key: _pixels(data) for key, data in read_images(directory, rows)}


@pytest.fixture
def with_duplicates(tmp_path):
    """Prepared and split data where a third of the images have byte-identical twins."""
    raw = write_class_folders(tmp_path / "rawdup", ["circle", "square", "triangle"], per_class=18)
    for folder in sorted((raw / "images").iterdir()):
        for source in sorted(folder.glob("img-*.png"))[::3]:
            shutil.copy(source, folder / f"copy-of-{source.name}")
    prepared = tmp_path / "prepdup"
    split_dir = tmp_path / "splitdup"
    layout = layout_of(tmp_path, raw=raw, prepared=prepared, split=split_dir)
    prepare.run(PrepareParams(size=(16, 16), color="rgb", workers=1), layout)
    split.run(SplitParams(val=0.2, test=0.2), 5, layout)
    return prepared, split_dir


def test_no_held_out_image_nor_a_duplicate_of_one_feeds_augmentation(with_duplicates, tmp_path):
    prepared, split_dir = with_duplicates
    manifest = read_manifest(prepared).set_index("id")
    assert manifest["group"].duplicated().sum() == 18  # the twins really are duplicates
    _run(prepared, split_dir, tmp_path / "aug", per_image=3)
    augmented = read_manifest(tmp_path / "aug")
    train = read_split(split_dir, "train")
    held_out = pd.concat([read_split(split_dir, n) for n in ("val", "test")])
    assert set(augmented["parent"]) == set(train["id"])
    assert not set(augmented["parent"]) & set(held_out["id"])
    assert not set(manifest.loc[augmented["parent"], "group"]) & set(held_out["group"])
    labels = manifest.loc[augmented["parent"], "label"].to_numpy()
    assert (labels == augmented["label"].to_numpy()).all()


def test_a_split_that_leaks_a_duplicate_is_refused(prepared_dir, split_dir, tmp_path):
    leaky = tmp_path / "leaky"
    shutil.copytree(split_dir, leaky)
    train = read_split(leaky, "train")
    test = read_split(leaky, "test")
    test.loc[0, "group"] = train.loc[0, "group"]
    test.to_csv(leaky / "test.csv", index=False)
    with pytest.raises(augment.StageError, match=r"1 duplicate group\(s\) sit in train and in"):
        _run(prepared_dir, leaky, tmp_path / "aug")
    assert not (tmp_path / "aug").exists()


def test_per_image_makes_that_many_samples_from_every_training_image(
    prepared_dir, split_dir, tmp_path
):
    summary = _run(prepared_dir, split_dir, tmp_path / "aug", per_image=3)
    augmented = read_manifest(tmp_path / "aug")
    train = read_split(split_dir, "train")
    assert augmented["parent"].value_counts().to_dict() == dict.fromkeys(train["id"], 3)
    assert summary["per_class"] == {"circle": 36, "square": 36, "triangle": 36}
    assert augmented["id"].is_unique


def test_per_class_balances_the_classes_to_the_target(tmp_path):
    raw = write_class_folders(tmp_path / "raw", ["few", "many", "some"], per_class=30)
    for name, keep in (("few", 10), ("some", 20)):
        for path in sorted((raw / "images" / name).iterdir())[keep:]:
            path.unlink()
    prepared, split_dir = tmp_path / "prepared", tmp_path / "split"
    layout = layout_of(tmp_path, raw=raw, prepared=prepared, split=split_dir)
    prepare.run(PrepareParams(size=(16, 16), color="rgb", workers=1), layout)
    split.run(SplitParams(val=0.2, test=0.2), 1, layout)
    train_counts = read_split(split_dir, "train")["label"].value_counts()
    assert train_counts.to_dict() == {"many": 18, "some": 12, "few": 6}

    summary = _run(prepared, split_dir, tmp_path / "aug", per_image=0, per_class=25)

    assert summary["training_per_class"] == {"few": 25, "many": 25, "some": 25}
    made = read_manifest(tmp_path / "aug")
    assert made["label"].value_counts().to_dict() == {"few": 19, "some": 13, "many": 7}
    # spread evenly: no image of a class is used more than once more than another
    uses = made.groupby("label")["parent"].value_counts()
    assert (uses.groupby(level=0).max() - uses.groupby(level=0).min()).max() <= 1
    # a class already at the target gets nothing
    summary = _run(prepared, split_dir, tmp_path / "aug2", per_image=0, per_class=12)
    assert summary["per_class"] == {"few": 6, "many": 0, "some": 0}


def test_augmented_images_keep_the_standard_size(prepared_dir, split_dir, tmp_path):
    _run(prepared_dir, split_dir, tmp_path / "aug")
    manifest = read_manifest(tmp_path / "aug")
    assert "crop_random" in ";".join(manifest["operations"])
    for _, data in read_images(tmp_path / "aug", manifest):
        assert decode_png_array(data).shape == (16, 16, 3)


def test_same_bytes_on_every_run_and_for_any_worker_count(prepared_dir, split_dir, tmp_path):
    outputs = []
    for name, workers in (("a", 1), ("b", 1), ("c", 2)):
        preview = tmp_path / f"{name}.png"
        _run(prepared_dir, split_dir, tmp_path / name, preview_path=preview, workers=workers)
        outputs.append((tree_bytes(tmp_path / name), preview.read_bytes()))
    assert outputs[0] == outputs[1] == outputs[2]
    assert len(outputs[0][0]["manifest.csv"].splitlines()) == 1 + 72


def test_each_sample_records_its_parent_seed_and_drawn_operations(
    prepared_dir, split_dir, tmp_path
):
    _run(prepared_dir, split_dir, tmp_path / "aug")
    manifest = read_manifest(tmp_path / "aug")
    made = _images(tmp_path / "aug", manifest)
    prepared = read_manifest(prepared_dir)
    originals = dict(read_images(prepared_dir, prepared))
    operations = build_class_operations(OPERATIONS, {}, ["circle", "square", "triangle"])
    counts = dict.fromkeys(["rotate", "zoom", "crop_random"], 0)
    for row in manifest.itertuples(index=False):
        index = int(row.id.removeprefix("aug-"))
        assert row.seed == sample_seed(11, index)
        applied = json.loads(row.operations)
        names = [a["name"] for a in applied]
        assert names == [op.name for op in OPERATIONS if op.name in names]  # in params order
        for record in applied:
            assert 0 <= record["draw"] < record["probability"]
            counts[record["name"]] += 1
        # the record is enough to make the sample again, byte for byte
        original = decode(originals[row.parent])
        image, again = augment_image(original, operations[row.label], 11, index)
        assert [a.to_dict() for a in again] == applied
        assert (np.asarray(image) == made[row.id]).all()
    assert counts["rotate"] > counts["zoom"] > 0 and counts["crop_random"] > 0


def test_class_overrides_drop_or_change_an_operation_for_named_classes(
    prepared_dir, split_dir, tmp_path
):
    operations = [
        AugmentOperation(name="flip_left_right", probability=1.0),
        AugmentOperation(name="flip_top_bottom", probability=1.0),
        AugmentOperation(name="invert", probability=0.0),
    ]
    overrides = {
        # like a bat logo: may be mirrored, never turned upside down
        "triangle": {"flip_top_bottom": False},
        "square": {"invert": {"probability": 1.0}},
    }
    _run(
        prepared_dir,
        split_dir,
        tmp_path / "aug",
        per_image=1,
        operations=operations,
        class_overrides=overrides,
    )
    manifest = read_manifest(tmp_path / "aug")
    made = _images(tmp_path / "aug", manifest)
    originals = _images(prepared_dir, read_manifest(prepared_dir))
    expected_ops = {
        "circle": ["flip_left_right", "flip_top_bottom"],
        "square": ["flip_left_right", "flip_top_bottom", "invert"],
        "triangle": ["flip_left_right"],
    }
    for row in manifest.itertuples(index=False):
        assert [a["name"] for a in json.loads(row.operations)] == expected_ops[row.label]
        mirrored = originals[row.parent][:, ::-1]
        if row.label == "triangle":
            assert (made[row.id] == mirrored).all()
        elif row.label == "circle":
            assert (made[row.id] == mirrored[::-1]).all()
        else:
            assert (made[row.id] == 255 - mirrored[::-1]).all()


def test_preview_shows_originals_beside_their_samples(prepared_dir, split_dir, tmp_path):
    sizes = []
    for rows in (1, 3):
        preview = tmp_path / f"preview{rows}.png"
        _run(prepared_dir, split_dir, tmp_path / f"aug{rows}", preview_path=preview, preview=rows)
        with Image.open(io.BytesIO(preview.read_bytes())) as image:
            assert image.format == "PNG"
            sizes.append(image.size)
    # one row per original; the original plus its two samples across
    assert sizes[0][0] == sizes[1][0]
    assert sizes[1][1] == pytest.approx(3 * sizes[0][1], rel=0.05)


def test_no_operations_or_no_amount_makes_no_samples(prepared_dir, split_dir, tmp_path):
    preview = tmp_path / "preview.png"
    summary = _run(prepared_dir, split_dir, tmp_path / "aug", preview_path=preview, per_image=0)
    assert summary["samples"] == 0
    assert read_manifest(tmp_path / "aug").empty
    assert preview.exists()
    summary = _run(prepared_dir, split_dir, tmp_path / "aug", operations=[])
    assert summary["samples"] == 0


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
    too_far = AugmentOperation(name="rotate", max_left_rotation=40, max_right_rotation=5)
    with pytest.raises(AugmentConfigError, match=r"rotate: .*max_left_rotation.*between 0 and 25"):
        _run(prepared_dir, split_dir, tmp_path / "aug", operations=[too_far])


def test_bad_overrides_name_what_exists(prepared_dir, split_dir, tmp_path):
    flip = [AugmentOperation(name="flip_left_right", probability=0.5)]
    with pytest.raises(
        AugmentConfigError, match=r"no class named 'bat'.*classes: circle, square, triangle"
    ):
        _run(
            prepared_dir,
            split_dir,
            tmp_path / "aug",
            operations=flip,
            class_overrides={"bat": {"flip_left_right": False}},
        )
    with pytest.raises(
        AugmentConfigError,
        match=r"class_overrides.circle: flip_top_bottom is not in augment.operations "
        r"\(flip_left_right\)",
    ):
        _run(
            prepared_dir,
            split_dir,
            tmp_path / "aug",
            operations=flip,
            class_overrides={"circle": {"flip_top_bottom": False}},
        )
    with pytest.raises(
        AugmentConfigError,
        match=r"class_overrides.circle: flip_left_right does not take angle",
    ):
        _run(
            prepared_dir,
            split_dir,
            tmp_path / "aug",
            operations=flip,
            class_overrides={"circle": {"flip_left_right": {"angle": 3}}},
        )


def test_a_split_older_than_the_prepared_data_is_refused(prepared_dir, split_dir, tmp_path):
    stale = tmp_path / "stale"
    shutil.copytree(split_dir, stale)
    train = read_split(stale, "train")
    train.loc[0, "id"] = "0123456789abcdef"
    train.to_csv(stale / "train.csv", index=False)
    with pytest.raises(
        augment.StageError, match=r"1 training id\(s\) are not in .*dvc repro split"
    ):
        _run(prepared_dir, stale, tmp_path / "aug")


def test_shard_size_sets_the_samples_per_shard_and_nothing_else(prepared_dir, split_dir, tmp_path):
    _run(prepared_dir, split_dir, tmp_path / "one-shard")
    _run(prepared_dir, split_dir, tmp_path / "small-shards", shard_size=10)
    manifest = read_manifest(tmp_path / "small-shards")
    assert list(manifest.columns) == AUGMENTED_COLUMNS
    assert manifest["shard"].value_counts().sort_index().tolist() == [10] * 7 + [2]
    whole = read_manifest(tmp_path / "one-shard")
    assert set(whole["shard"]) == {"shard-00000.tar"}
    columns = ["id", "label", "parent", "seed", "operations"]
    assert manifest[columns].equals(whole[columns])
    assert dict(read_images(tmp_path / "small-shards", manifest)) == dict(
        read_images(tmp_path / "one-shard", whole)
    )
    with pytest.raises(ParamsError, match=r"augment\.shard_size: Input should be greater than"):
        parse_params({"augment": {"shard_size": 0}})


def _reused(caplog) -> tuple[int, int]:
    line = [r.getMessage() for r in caplog.records if "sample(s) reused" in r.getMessage()][-1]
    reused, made = (int(part.split()[0]) for part in line.split(": ", 1)[1].split(", "))
    caplog.clear()
    return reused, made


def test_samples_come_from_the_cache_when_image_operations_and_seed_recur(
    prepared_dir, split_dir, tmp_path, caplog
):
    caplog.set_level("INFO", logger="imgpipe.augment")
    cache = {"dir": str(tmp_path / "cache")}
    _run(prepared_dir, split_dir, tmp_path / "first", cache=cache, workers=2)
    total = len(read_manifest(tmp_path / "first"))
    assert _reused(caplog) == (0, total)
    # One class's operations change: only its samples are made again.
    changed = {"class_overrides": {"circle": {"zoom": False}}}
    _run(prepared_dir, split_dir, tmp_path / "again", cache=cache, **changed)
    circles = (read_manifest(tmp_path / "again")["label"] == "circle").sum()
    assert _reused(caplog) == (total - circles, circles)
    _run(prepared_dir, split_dir, tmp_path / "clean", **changed)
    assert tree_bytes(tmp_path / "again") == tree_bytes(tmp_path / "clean")
    assert (tmp_path / "again-preview.png").read_bytes() == (
        tmp_path / "clean-preview.png"
    ).read_bytes()

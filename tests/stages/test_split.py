import json

import pandas as pd
import pytest
from PIL import Image

from imgpipe.errors import StageError
from imgpipe.images import encode_png
from imgpipe.params import PrepareParams, SplitParams
from imgpipe.shards import (
    PREPARED_COLUMNS,
    PackedImage,
    ShardWriter,
    read_manifest,
    read_split,
    write_manifest,
)
from stages import prepare, split
from tests.conftest import layout_of, tree_bytes


def _splits(split_dir):
    return {name: read_split(split_dir, name) for name in split.SPLIT_NAMES}


def test_every_sample_lands_in_exactly_one_stratified_split(prepared_dir, split_dir):
    parts = _splits(split_dir)
    ids = pd.concat([p["id"] for p in parts.values()])
    assert ids.is_unique
    assert set(ids) == set(read_manifest(prepared_dir)["id"])
    for name, part in parts.items():
        counts = part["label"].value_counts()
        expected = {"train": 12, "val": 4, "test": 4}[name]
        assert counts.to_dict() == dict.fromkeys(["circle", "square", "triangle"], expected)


def test_same_seed_same_split_other_seed_other_split(prepared_dir, tmp_path, split_dir):
    again = tmp_path / "again"
    split.run(
        SplitParams(val=0.2, test=0.2), 7, layout_of(tmp_path, prepared=prepared_dir, split=again)
    )
    other = tmp_path / "other"
    split.run(
        SplitParams(val=0.2, test=0.2), 8, layout_of(tmp_path, prepared=prepared_dir, split=other)
    )
    assert (again / "test.csv").read_bytes() == (split_dir / "test.csv").read_bytes()
    assert (other / "test.csv").read_bytes() != (split_dir / "test.csv").read_bytes()


def test_duplicates_never_straddle_two_splits():
    manifest = pd.DataFrame(
        {
            "id": [f"s{i:02d}" for i in range(40)],
            "label": ["a"] * 20 + ["b"] * 20,
            # every image has a twin: 20 groups of two
            "group": [f"g{i // 2:02d}" for i in range(40)],
        }
    )
    names = split.assign_splits(manifest, SplitParams(val=0.2, test=0.2), seed=3)
    assert manifest.assign(split=names).groupby("group")["split"].nunique().max() == 1


def test_class_too_small_to_split_is_named():
    manifest = pd.DataFrame(
        {
            "id": [f"s{i}" for i in range(23)],
            "label": ["big"] * 20 + ["tiny"] * 3,
            "group": [f"g{i}" for i in range(23)],
        }
    )
    with pytest.raises(StageError, match=r"'tiny' has 3"):
        split.assign_splits(manifest, SplitParams(val=0.2, test=0.2), seed=0)


def _with_source_test(classes=("a", "b"), train_per_class=30, test_per_class=10) -> pd.DataFrame:
    rows = []
    for label in classes:
        for k in range(train_per_class + test_per_class):
            part = "train" if k < train_per_class else "test"
            rows.append({"id": f"{label}{k:03d}", "label": label, "source_split": part})
    manifest = pd.DataFrame(rows)
    manifest["group"] = manifest["id"]
    return manifest


def test_the_sources_own_test_set_can_be_the_test_split():
    manifest = _with_source_test()
    params = SplitParams(val=0.2, test=0.3, keep_source_test=True)
    names = split.assign_splits(manifest, params, seed=4)
    assert (names[manifest["source_split"] == "test"] == "test").all()
    rest = names[manifest["source_split"] == "train"]
    assert set(rest) == {"train", "val"}
    # val is a fraction of the source's training part, stratified; test=0.3 is not used
    per_class = manifest.assign(split=names).groupby(["split", "label"]).size()
    assert per_class["val"].to_dict() == {"a": 6, "b": 6}
    assert per_class["test"].to_dict() == {"a": 10, "b": 10}


def test_a_copy_of_a_source_test_image_joins_it_in_test():
    manifest = _with_source_test()
    manifest.loc[0, "group"] = manifest.loc[35, "group"]  # a training image equal to a test one
    names = split.assign_splits(manifest, SplitParams(keep_source_test=True), seed=0)
    assert names[0] == names[35] == "test"
    assert (names != "test").sum() == 59


def test_keeping_the_source_test_set_without_one_says_what_to_do(prepared_dir, tmp_path):
    assert "source_split" not in read_manifest(prepared_dir).columns
    with pytest.raises(StageError, match=r"no test set of its own.*keep_source_test: false"):
        split.run(
            SplitParams(keep_source_test=True),
            1,
            layout_of(tmp_path, prepared=prepared_dir, split=tmp_path / "split"),
        )
    assert not (tmp_path / "split").exists()
    unmarked = _with_source_test().assign(source_split="")
    with pytest.raises(StageError, match=r"no test set of its own"):
        split.assign_splits(unmarked, SplitParams(keep_source_test=True), seed=0)


def test_a_marked_manifest_is_split_normally_unless_asked(prepared_dir, tmp_path):
    marked = tmp_path / "marked"
    marked.mkdir()
    manifest = read_manifest(prepared_dir)
    manifest["source_split"] = ["test" if k % 4 == 0 else "train" for k in range(len(manifest))]
    manifest.to_csv(marked / "manifest.csv", index=False)
    split.run(
        SplitParams(val=0.2, test=0.2),
        7,
        layout_of(tmp_path, prepared=marked, split=tmp_path / "plain"),
    )
    split.run(
        SplitParams(val=0.2, test=0.2),
        7,
        layout_of(tmp_path, prepared=prepared_dir, split=tmp_path / "unmarked"),
    )
    assert tree_bytes(tmp_path / "plain") == tree_bytes(tmp_path / "unmarked")
    summary = split.run(
        SplitParams(val=0.2, keep_source_test=True),
        7,
        layout_of(tmp_path, prepared=marked, split=tmp_path / "kept"),
    )
    assert summary["test"]["images"] == 15 and summary["moved_to_test"] == 0
    kept_test = read_split(tmp_path / "kept", "test")
    assert set(kept_test["id"]) == set(manifest.loc[manifest["source_split"] == "test", "id"])


def test_a_class_too_small_for_val_alone_is_named():
    manifest = _with_source_test(train_per_class=30).iloc[:-8]  # b keeps 30 train, 2 test
    manifest = pd.concat([manifest, _with_source_test(("c",), train_per_class=3)])
    with pytest.raises(StageError, match=r"'c' has 3; each class needs at least 5 for val=0.2"):
        split.assign_splits(manifest, SplitParams(val=0.2, keep_source_test=True), seed=0)


def test_copies_of_one_image_count_once_towards_a_class_size():
    manifest = pd.DataFrame(
        {
            "id": [f"s{i:02d}" for i in range(40)],
            "label": ["big"] * 20 + ["copies"] * 20,
            "group": [f"g{i:02d}" for i in range(20)] + ["x", "y"] * 10,
        }
    )
    with pytest.raises(StageError, match=r"'copies' has 2; each class needs at least 5 .*once"):
        split.assign_splits(manifest, SplitParams(val=0.2, test=0.2), seed=0)


def test_near_copies_join_their_original_in_one_split_and_unrelated_photos_stay_apart(
    tmp_path,
):
    from tests.imgpipe.test_near_duplicates import GEOMETRIC, near_copies, photo

    raw = tmp_path / "raw"
    originals = {}
    for index, label in enumerate(("hills", "lakes")):
        folder = raw / "images" / label
        folder.mkdir(parents=True)
        for k in range(10):
            name = f"{label}-{k}"
            original = photo(100 * index + k)
            original.save(folder / f"{name}.png")
            originals[name] = original
            if k < 2:
                for kind, copy in near_copies(original).items():
                    copy.save(folder / f"{name}-{kind}.png")
    (raw / "source.json").write_text(
        json.dumps(
            {
                "kind": "test",
                "layout": "class_folders",
                "root": "images",
                "class_names": ["hills", "lakes"],
            }
        )
    )
    layout = layout_of(tmp_path, raw=raw)
    prepare.run(PrepareParams(size=(32, 32), color="rgb", workers=1), layout)
    manifest = read_manifest(layout.prepared)
    assert manifest["phash"].str.fullmatch(r"[0-9a-f]{16}").all()
    summary = split.run(
        SplitParams(val=0.2, test=0.2, near_duplicate_distance=GEOMETRIC), 3, layout
    )
    rows = pd.concat(
        [read_split(layout.split, name).assign(split=name) for name in split.SPLIT_NAMES]
    ).merge(manifest[["id", "origin"]], on="id")
    rows["original"] = rows["origin"].str.extract(r"/([a-z]+-\d)[-.]")[0]
    assert rows.groupby("original")["group"].nunique().max() == 1  # each with its copies
    assert rows.groupby("original")["split"].nunique().max() == 1
    assert rows["group"].nunique() == len(originals)  # and no two photos joined
    leakage = json.loads((layout.split / split.LEAKAGE).read_text())
    # Each copy meets its original; two copies of one photo may be farther apart.
    assert 2 * 2 * 5 <= leakage["near_pairs"] <= 2 * 2 * 15
    assert leakage["test_near_duplicates_in_train"] == 0
    assert summary["leakage"]["cross_split_pairs"] == {
        "test-train": 0,
        "val-train": 0,
        "test-val": 0,
    }
    assert layout.split_pairs_image.read_bytes().startswith(b"\x89PNG")


def _prepared_with_hashes(directory, rows):
    """A prepared folder whose rows carry the perceptual hashes the test chose."""
    directory.mkdir(parents=True)
    records = []
    with ShardWriter(directory, 100) as shards:
        for k, (label, part, phash) in enumerate(rows):
            image_id = f"i{k:03d}"
            png = encode_png(Image.new("RGB", (8, 8), (k, 255 - k, 7)))
            place = shards.add(PackedImage(image_id, png))
            records.append(
                {
                    "id": image_id,
                    "label": label,
                    **place,
                    "origin": f"{part}/{label}/{k}.png",
                    "sha256": f"{k:064x}",
                    "group": f"g{k:03d}",
                    "phash": phash,
                    "source_split": part,
                }
            )
    write_manifest(directory, records, [*PREPARED_COLUMNS, "source_split"])


def test_leakage_across_a_fixed_test_set_is_counted_exactly_and_training_copies_can_go(
    tmp_path,
):
    # Per class a and b: 10 test, 6 val and 24 train images, their hashes far apart
    # (multiples of a 64-bit odd constant) except for the copies planted below.
    rows = [
        [
            label,
            "test" if k < 10 else "val" if k < 16 else "train",
            f"{(0x9E3779B97F4A7C15 * (40 * index + k + 1)) % 2**64:016x}",
        ]
        for index, label in enumerate("ab")
        for k in range(40)
    ]

    def flip(hex_hash, bits):
        return f"{int(hex_hash, 16) ^ sum(1 << b for b in bits):016x}"

    rows[20][2] = rows[0][2]  # train copy of test 0 at distance 0 (not pixel-identical)
    rows[21][2] = flip(rows[0][2], [1, 2])  # a second train copy of test 0
    rows[22][2] = flip(rows[1][2], [5, 9, 30, 31])  # test 1, at the default distance 4
    rows[23][2] = flip(rows[2][2], [1, 2, 3, 4, 5, 6])  # too far: not a near duplicate
    rows[10][2] = flip(rows[3][2], [0])  # test 3 has a copy in val only
    rows[60][2] = flip(rows[40][2], [7])  # class b: test 40 with a train copy
    layout = layout_of(tmp_path)
    _prepared_with_hashes(layout.prepared, rows)
    fixed = {"keep_source_test": True, "keep_source_val": True}
    summary = split.run(SplitParams(**fixed), 0, layout)
    leakage = json.loads((layout.split / split.LEAKAGE).read_text())
    assert leakage["test_near_duplicates_in_train_count"] == 3  # tests 0, 1 and 40
    assert leakage["test_near_duplicates_in_train"] == 3 / 20
    assert leakage["cross_split_pairs"] == {"test-train": 4, "val-train": 0, "test-val": 1}
    assert leakage["dropped_from_train"] == []
    pairs = pd.read_csv(layout.split / split.PAIRS_FILE, dtype=str)
    assert pairs["distance"].tolist() == ["0", "1", "1", "2", "4"]
    assert pairs["id_a"].tolist()[:1] == ["i000"] and set(pairs["split_a"]) == {"test"}
    assert summary["test"]["images"] == 20 and summary["train"]["images"] == 48

    summary = split.run(SplitParams(**fixed, drop_train_near_duplicates=True), 0, layout)
    leakage = json.loads((layout.split / split.LEAKAGE).read_text())
    assert [r["id"] for r in leakage["dropped_from_train"]] == ["i020", "i021", "i022", "i060"]
    assert leakage["test_near_duplicates_in_train"] == 0
    assert summary["train"]["images"] == 44
    assert not set(read_split(layout.split, "train")["id"]) & {"i020", "i021", "i022", "i060"}
    assert pd.read_csv(layout.split / split.PAIRS_FILE)["split_b"].tolist() == ["val"]

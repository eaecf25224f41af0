import pandas as pd
import pytest

from imgpipe.errors import StageError
from imgpipe.params import SplitParams
from imgpipe.shards import read_manifest, read_split
from stages import split
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

import pandas as pd
import pytest

from imgpipe.cli import StageError
from imgpipe.params import SplitParams
from imgpipe.shards import read_manifest, read_split
from stages import split


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
    split.run(SplitParams(val=0.2, test=0.2), 7, prepared_dir, again)
    other = tmp_path / "other"
    split.run(SplitParams(val=0.2, test=0.2), 8, prepared_dir, other)
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

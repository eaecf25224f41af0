"""Folds keep groups whole and classes spread; the label-issue table reads the ranking."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from imgpipe.cross_fit import assign_folds
from imgpipe.errors import StageError
from imgpipe.label_issues import COLUMNS, issue_table, rank_label_issues


def test_folds_keep_every_group_in_one_fold_and_spread_each_class():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 40)
    groups = np.array([f"g{i // 3}" for i in range(len(labels))])  # triples of near copies
    rng.shuffle(groups)
    fold = assign_folds(labels, groups, 4, seed=1)
    assert set(fold) == {0, 1, 2, 3}
    for group in set(groups):
        assert len(set(fold[groups == group])) == 1
    for label in (0, 1, 2):
        counts = np.bincount(fold[labels == label], minlength=4)
        assert counts.min() >= 6  # about 10 each
    assert (assign_folds(labels, groups, 4, seed=1) == fold).all()


def test_fewer_groups_than_folds_is_refused():
    with pytest.raises(StageError, match=r"audit\.folds is 5 but train and val hold only 2"):
        assign_folds(np.array([0, 1, 0, 1]), np.array(["a", "a", "b", "b"]), 5, seed=0)


def test_flipped_labels_are_flagged_first_and_the_table_suggests_the_likely_class():
    rng = np.random.default_rng(3)
    true = np.repeat([0, 1, 2], 50)
    probabilities = np.full((150, 3), 0.05)
    probabilities[np.arange(150), true] = 0.9
    probabilities += rng.uniform(0, 0.02, probabilities.shape)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    given = true.copy()
    flipped = [4, 70, 140]
    given[flipped] = [1, 2, 0]
    ranking = rank_label_issues(given, probabilities, "prune_by_noise_rate", "self_confidence")
    assert sorted(ranking.flagged.tolist()) == flipped
    assert ranking.scores.shape == (150,)
    rows = pd.DataFrame(
        {
            "origin": [f"f{i}.png" for i in range(150)],
            "id": [f"{i:04d}" for i in range(150)],
            "split": ["train"] * 150,
        }
    )
    table = issue_table(rows, given, probabilities, ranking, ["a", "b", "c"])
    assert list(table.columns) == COLUMNS
    by_origin = table.set_index("origin")
    assert by_origin.loc["f4.png", "given_label"] == "b"
    assert by_origin.loc["f4.png", "suggested_label"] == "a"
    assert by_origin.loc["f70.png", "suggested_label"] == "b"
    assert table["rank"].tolist() == [1, 2, 3]

"""Which given labels are likely wrong, by confident learning (cleanlab) on honest probabilities.

cleanlab estimates, per pair of classes, how often a label of one class sits on an image of
the other (the confident joint), flags that many of the least likely labels (``filter_by``),
and scores every label (``rank_by``: low means suspect). The probabilities must come from
models that never saw the image (``imgpipe.cross_fit``), or the estimate sees almost no noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

# The columns of reports/label_issues.csv, in order.
COLUMNS = [
    "rank",
    "origin",
    "id",
    "split",
    "given_label",
    "suggested_label",
    "score",
    "given_probability",
    "suggested_probability",
]


@dataclass(frozen=True)
class Ranking:
    flagged: np.ndarray  # row positions of the flagged labels, the likeliest error first
    scores: np.ndarray  # label-quality score of every row, 0..1, low = suspect


def rank_label_issues(
    labels: np.ndarray, probabilities: np.ndarray, filter_by: str, rank_by: str
) -> Ranking:
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    flagged = find_label_issues(
        labels,
        probabilities,
        filter_by=filter_by,
        return_indices_ranked_by=rank_by,
        n_jobs=1,  # no worker processes: same result, and none left behind by a killed stage
    )
    scores = get_label_quality_scores(labels, probabilities, method=rank_by)
    return Ranking(np.asarray(flagged, dtype=np.int64), np.asarray(scores, dtype=np.float64))


def issue_table(
    rows: pd.DataFrame,
    labels: np.ndarray,
    probabilities: np.ndarray,
    ranking: Ranking,
    classes: list[str],
) -> pd.DataFrame:
    """One row per flagged label, the likeliest error first (``rows`` has id, origin, split)."""
    picked = ranking.flagged
    suggested = probabilities[picked].argmax(axis=1)
    return pd.DataFrame(
        {
            "rank": np.arange(1, len(picked) + 1),
            "origin": rows["origin"].to_numpy()[picked],
            "id": rows["id"].to_numpy()[picked],
            "split": rows["split"].to_numpy()[picked],
            "given_label": [classes[i] for i in labels[picked]],
            "suggested_label": [classes[i] for i in suggested],
            "score": np.round(ranking.scores[picked], 6),
            "given_probability": np.round(probabilities[picked, labels[picked]], 6),
            "suggested_probability": np.round(probabilities[picked, suggested], 6),
        },
        columns=COLUMNS,
    )

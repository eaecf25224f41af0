"""audit: likely label errors in every split, by confident learning on out-of-sample predictions.

``audit.folds`` models of ``audit.model``, each trained on the train and val images outside one
group-keeping fold, score the fold they left out; test images get the mean of all of them (see
``imgpipe.cross_fit`` for why this is honest). cleanlab then flags the labels that those
probabilities make unlikely (``imgpipe.label_issues``). Writes:

- ``reports/label_issues.csv``: one row per flagged image, the likeliest error first, with its
  origin, split, given label, suggested label and score (low = suspect);
- ``reports/audit.json``: counts per split and per class, and how well the fold models did;
- ``reports/audit/label_issues.png``: the top suspects, to look at before relabelling.

Nothing is relabelled or dropped here: a flag is a question for a person (fix the folder the
file sits in, or leave it out of the source), not an answer.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from imgpipe import atomic
from imgpipe.cli import run_main
from imgpipe.cross_fit import Images, out_of_sample_probabilities
from imgpipe.errors import StageError
from imgpipe.images import decode_png_array
from imgpipe.label_issues import COLUMNS, Ranking, issue_table, rank_label_issues
from imgpipe.layout import Layout
from imgpipe.params import AuditParams, load_params
from imgpipe.plots import Tile, gallery_image
from imgpipe.quiet_tf import import_tensorflow
from imgpipe.shards import read_images, read_info, read_manifest, read_split

log = logging.getLogger("imgpipe.audit")

SPLITS = ("train", "val", "test")
POOL = ("train", "val")  # what the fold models learn from; test is only ever scored
GALLERY_COLUMNS = 6
DIGITS = 6


def read_images_info(layout: Layout) -> Images:
    info = read_info(layout.prepared)
    return Images(layout.prepared, info["classes"], info["standard"])


def split_table(layout: Layout) -> pd.DataFrame:
    """The manifest rows of every split, with the split's name and its (near-)duplicate group."""
    manifest = read_manifest(layout.prepared).drop(columns=["group"])
    parts = []
    for name in SPLITS:
        chosen = read_split(layout.split, name)[["id", "group"]]
        parts.append(manifest.merge(chosen, on="id", how="inner").assign(split=name))
    return pd.concat(parts, ignore_index=True)


def _counts(table: pd.DataFrame, issues: pd.DataFrame) -> dict:
    by_split = {}
    for name in SPLITS:
        audited = int((table["split"] == name).sum())
        flagged = int((issues["split"] == name).sum())
        by_split[name] = {
            "audited": audited,
            "flagged": flagged,
            "flagged_fraction": round(flagged / audited, DIGITS) if audited else 0.0,
        }
    return by_split


def _accuracy(labels: np.ndarray, probabilities: np.ndarray) -> float:
    return round(float(np.mean(probabilities.argmax(1) == labels)), DIGITS) if len(labels) else 0.0


def audit_report(
    table: pd.DataFrame,
    labels: np.ndarray,
    probabilities: np.ndarray,
    issues: pd.DataFrame,
    params: AuditParams,
) -> dict:
    pool = table["split"].isin(POOL).to_numpy()
    return {
        "audited": len(table),
        "flagged": len(issues),
        "flagged_fraction": round(len(issues) / len(table), DIGITS) if len(table) else 0.0,
        "by_split": _counts(table, issues),
        "by_given_label": {
            str(k): int(v) for k, v in issues["given_label"].value_counts().sort_index().items()
        },
        # How good the scoring models were: weak models flag many correct labels.
        "out_of_sample_accuracy": {
            "train_val": _accuracy(labels[pool], probabilities[pool]),
            "test": _accuracy(labels[~pool], probabilities[~pool]),
        },
        "folds": params.folds,
        "filter_by": params.filter_by,
        "rank_by": params.rank_by,
    }


def gallery_png(layout: Layout, issues: pd.DataFrame, table: pd.DataFrame, count: int) -> bytes:
    """The top ``count`` suspects in rank order, a row of six at a time."""
    top = issues.head(count)
    rows = table.set_index("id").loc[top["id"]].reset_index()
    pixels = {
        sample_id: decode_png_array(data) for sample_id, data in read_images(layout.prepared, rows)
    }
    tiles = [
        Tile(
            pixels=pixels[item.id],
            true=item.given_label,
            predicted=item.suggested_label,
            probability=float(item.suggested_probability),
            sample_id=item.id,
            origin=item.origin,
            note=f"{item.given_label} → {item.suggested_label} ({item.score:.2f})",
        )
        for item in top.itertuples(index=False)
    ]
    grid = [
        (
            f"{start + 1}-{start + len(tiles[start : start + GALLERY_COLUMNS])}",
            tiles[start : start + GALLERY_COLUMNS],
        )
        for start in range(0, len(tiles), GALLERY_COLUMNS)
    ]
    return gallery_image(
        grid,
        "likeliest label errors: given → suggested (score, low = suspect)",
        "no label flagged" if count else "gallery turned off (audit.gallery: 0)",
        row_caption="ranks",
    )


def run(params: AuditParams, seed: int, layout: Layout) -> dict:
    """Score every image out of sample, flag and rank label issues, write the three outputs."""
    import_tensorflow()
    started = time.perf_counter()
    images = read_images_info(layout)
    table = split_table(layout)
    pool = table[table["split"].isin(POOL)]
    test = table[table["split"] == "test"]
    if not len(pool):
        raise StageError("audit found no train or val images in data/split; run split first")
    pool_probabilities, test_probabilities = out_of_sample_probabilities(
        images, pool, test, params, seed
    )
    table = pd.concat([pool, test], ignore_index=True)
    probabilities = np.concatenate([pool_probabilities, test_probabilities])
    labels = table["label"].map(images.class_index).to_numpy(np.int64)
    ranking: Ranking = rank_label_issues(labels, probabilities, params.filter_by, params.rank_by)
    issues = issue_table(table, labels, probabilities, ranking, images.classes)
    report = audit_report(table, labels, probabilities, issues, params)
    atomic.write_bytes(
        layout.label_issues,
        issues.to_csv(index=False, lineterminator="\n", columns=COLUMNS).encode(),
    )
    atomic.write_json(layout.audit_report, report)
    atomic.write_bytes(layout.audit_gallery, gallery_png(layout, issues, table, params.gallery))
    log.info(
        "flagged %d of %d labels (%.2f%%) in %.0f s; the likeliest first in %s",
        report["flagged"],
        report["audited"],
        100 * report["flagged_fraction"],
        time.perf_counter() - started,
        layout.label_issues,
    )
    return report


def main() -> None:
    def body() -> None:
        params = load_params()
        run(params.audit, params.base.seed, Layout())

    run_main("audit", body)


if __name__ == "__main__":
    main()

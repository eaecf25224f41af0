"""evaluate: test-split metrics, one prediction row per test image, and the plots behind them.

``reports/metrics.json`` keeps stable key names so ``dvc metrics diff`` and ``dvc exp show``
compare experiments. ``reports/predictions.csv`` lists every test image with its origin, true
and predicted labels and top-k probabilities. ``reports/evaluate/`` holds the data for DVC's
plot templates (per-class scores, ROC and precision-recall points) and two pictures: the
normalized confusion matrix with counts, and the most confident mistakes of each class.
How each plot is drawn is declared in the ``plots:`` section of ``dvc.yaml``.

Test images are read straight from the shards and decoded to the same uint8 pixels that
training fed the model, in manifest order, so each probability row is tied to its sample id.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    auc,
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_curve,
)
from tqdm import tqdm

from imgpipe import atomic
from imgpipe.cli import run_main
from imgpipe.errors import MissingInputError, StageError
from imgpipe.images import decode_png_array
from imgpipe.layout import LEAKAGE, Layout
from imgpipe.near_duplicates import LEAKAGE_COUNT, LEAKAGE_FRACTION
from imgpipe.params import EvaluateParams, load_params
from imgpipe.plots import Tile, confusion_image, gallery_image, per_class_image
from imgpipe.shards import read_images, read_manifest, split_rows
from imgpipe.trained import Trained, load_trained, top_k

log = logging.getLogger("imgpipe.evaluate")

# Names inside layout.evaluate_plots; dvc.yaml's plots section refers to them.
PER_CLASS_FILE = "per_class.json"
ROC_FILE = "roc.json"
PR_FILE = "precision_recall.json"
CONFUSION_IMAGE = "confusion_normalized.png"
GALLERY_IMAGE = "mistakes.png"
PER_CLASS_IMAGE = "per_class.png"

DIGITS = 6  # rounding of reported figures: stable text, no float noise in diffs


def _round(value: float) -> float:
    return round(float(value), DIGITS)


def top_k_accuracy(true: np.ndarray, probabilities: np.ndarray, k: int) -> float:
    """Share of rows whose true class is among the ``k`` likeliest.

    Written out because scikit-learn's ``top_k_accuracy_score`` refuses k >= classes and
    two-column scores of a two-class problem, both of which params may ask for.
    """
    indices, _ = top_k(probabilities, k)
    return float(np.mean(np.any(indices == true[:, None], axis=1)))


def classification_metrics(
    true: np.ndarray, probabilities: np.ndarray, classes: list[str], k: int
) -> dict:
    """Every test-set figure, under names that stay the same from one experiment to the next."""
    labels = list(range(len(classes)))
    predicted = np.argmax(probabilities, axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        true, predicted, labels=labels, zero_division=0
    )
    return {
        "accuracy": _round(accuracy_score(true, predicted)),
        "balanced_accuracy": _round(balanced_accuracy_score(true, predicted)),
        "macro_f1": _round(
            f1_score(true, predicted, labels=labels, average="macro", zero_division=0)
        ),
        "weighted_f1": _round(
            f1_score(true, predicted, labels=labels, average="weighted", zero_division=0)
        ),
        "top_k_accuracy": _round(top_k_accuracy(true, probabilities, k)),
        "log_loss": _round(log_loss(true, probabilities, labels=labels)),
        "test_images": len(true),
        "per_class": {
            name: {
                "precision": _round(precision[i]),
                "recall": _round(recall[i]),
                "f1": _round(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(classes)
        },
    }


def curve_target(
    true: np.ndarray, probabilities: np.ndarray, classes: list[str], positive: str | None
) -> tuple[np.ndarray, np.ndarray, str]:
    """(is positive, score, description) that the ROC and PR curves are drawn from.

    Two classes: the positive class's probability. More: every (image, class) pair scored
    one-vs-rest and pooled, the micro-average, so one curve still summarizes the model.
    """
    if len(classes) == 2:
        if positive is None:
            positive = classes[1]
        if positive not in classes:
            raise StageError(
                f"evaluate.positive_class: {positive!r} is not a class of this model; "
                f"choose one of {classes} or null"
            )
        index = classes.index(positive)
        return true == index, probabilities[:, index], f"positive class {positive}"
    if positive is not None:
        log.warning(
            "evaluate.positive_class=%r is ignored: with %d classes the ROC and PR "
            "curves are a micro-average over all classes",
            positive,
            len(classes),
        )
    onehot = np.zeros_like(probabilities, dtype=bool)
    onehot[np.arange(len(true)), true] = True
    return onehot.ravel(), probabilities.ravel(), "micro-average over all classes, one-vs-rest"


def _threshold(value: float) -> float | None:
    # roc_curve starts at an infinite threshold, which JSON cannot hold.
    return None if not np.isfinite(value) else _round(value)


def curves(is_positive: np.ndarray, scores: np.ndarray) -> tuple[list, list, dict]:
    """ROC points, precision-recall points, and the areas under them."""
    if is_positive.all() or not is_positive.any():
        log.warning("ROC / PR curves skipped: the test split has only one kind of sample")
        return [], [], {}
    fpr, tpr, roc_thresholds = roc_curve(is_positive, scores)
    precision, recall, pr_thresholds = precision_recall_curve(is_positive, scores)
    roc = [
        {"fpr": _round(f), "tpr": _round(t), "threshold": _threshold(h)}
        for f, t, h in zip(fpr, tpr, roc_thresholds, strict=True)
    ]
    # precision_recall_curve returns points by rising threshold; the last has none.
    pr = [
        {"recall": _round(r), "precision": _round(p), "threshold": _threshold(h)}
        for r, p, h in zip(recall, precision, [*pr_thresholds, np.inf], strict=True)
    ]
    areas = {
        "roc_auc": _round(auc(fpr, tpr)),
        "average_precision": _round(average_precision_score(is_positive, scores)),
    }
    return roc, pr[::-1], areas


def prediction_table(
    rows: pd.DataFrame, true: np.ndarray, probabilities: np.ndarray, classes: list[str], k: int
) -> pd.DataFrame:
    indices, top_probabilities = top_k(probabilities, k)
    names = np.asarray(classes, dtype=object)
    table = pd.DataFrame(
        {
            "id": rows["id"].to_numpy(),
            "origin": rows["origin"].to_numpy(),
            "true_label": names[true],
            "predicted_label": names[indices[:, 0]],
            "correct": indices[:, 0] == true,
        }
    )
    for rank in range(indices.shape[1]):
        table[f"top{rank + 1}_label"] = names[indices[:, rank]]
        table[f"top{rank + 1}_probability"] = np.round(top_probabilities[:, rank], DIGITS)
    return table.sort_values("id", kind="stable").reset_index(drop=True)


def most_confident_mistakes(
    true: np.ndarray, probabilities: np.ndarray, ids: np.ndarray, per_class: int
) -> dict[int, list[int]]:
    """Row positions of each true class's wrong predictions, surest first (ties by id)."""
    predicted = np.argmax(probabilities, axis=1)
    confidence = probabilities.max(axis=1)
    chosen = {}
    for label in np.unique(true):
        wrong = np.flatnonzero((true == label) & (predicted != label))
        wrong = sorted(wrong, key=lambda i: (-confidence[i], ids[i]))[:per_class]
        if wrong:
            chosen[int(label)] = [int(i) for i in wrong]
    return chosen


def load_test_rows(prepared_dir: Path, split_dir: Path, classes: list[str]) -> pd.DataFrame:
    """The test split's manifest rows in shard order, so shards are read front to back."""
    prepared = read_manifest(prepared_dir)
    rows = split_rows(prepared, split_dir, "test")
    if rows.empty:
        raise StageError(f"{split_dir}/test.csv names no image of {prepared_dir}: rerun split")
    unknown = sorted(set(rows["label"]) - set(classes))
    if unknown:
        raise StageError(
            f"test images have labels the model does not know: {unknown}; the model in "
            "data/model was trained on other data, rerun train (dvc repro train)"
        )
    return rows.sort_values(["shard", "offset"], kind="stable").reset_index(drop=True)


def pixel_batches(
    prepared_dir: Path, rows: pd.DataFrame, batch_size: int
) -> Iterator[tuple[list[str], np.ndarray]]:
    batch_ids, batch = [], []
    for sample_id, data in read_images(prepared_dir, rows):
        batch_ids.append(sample_id)
        batch.append(decode_png_array(data))
        if len(batch) == batch_size:
            yield batch_ids, np.stack(batch)
            batch_ids, batch = [], []
    if batch:
        yield batch_ids, np.stack(batch)


def predict_rows(
    trained: Trained, prepared_dir: Path, rows: pd.DataFrame, batch_size: int
) -> np.ndarray:
    parts, seen = [], []
    batches = pixel_batches(prepared_dir, rows, batch_size)
    total = -(-len(rows) // batch_size)
    for ids, pixels in tqdm(batches, total=total, desc="evaluate", unit="batch", mininterval=1):
        parts.append(trained.probabilities(pixels))
        seen.extend(ids)
    if seen != rows["id"].tolist():
        raise StageError(f"{prepared_dir}: shards do not match manifest.csv; rerun prepare")
    return np.concatenate(parts)


def gallery_tiles(
    prepared_dir: Path,
    rows: pd.DataFrame,
    chosen: dict[int, list[int]],
    true: np.ndarray,
    probabilities: np.ndarray,
    classes: list[str],
) -> list[tuple[str, list[Tile]]]:
    positions = [i for picks in chosen.values() for i in picks]
    pixels = {
        sample_id: decode_png_array(data)
        for sample_id, data in read_images(prepared_dir, rows.iloc[sorted(positions)])
    }
    gallery = []
    for label, picks in sorted(chosen.items()):
        tiles = [
            Tile(
                pixels=pixels[rows["id"].iat[i]],
                true=classes[true[i]],
                predicted=classes[int(np.argmax(probabilities[i]))],
                probability=float(probabilities[i].max()),
                sample_id=rows["id"].iat[i],
                origin=rows["origin"].iat[i],
            )
            for i in picks
        ]
        gallery.append((classes[label], tiles))
    return gallery


@dataclass(frozen=True)
class Predicted:
    """The model's answers on the test split, one row per image in shard order."""

    rows: pd.DataFrame  # the test images' manifest rows
    classes: list[str]
    true: np.ndarray  # class index of each row
    probabilities: np.ndarray  # rows x classes

    @property
    def predicted(self) -> np.ndarray:
        return np.argmax(self.probabilities, axis=1)


def predict_test_split(layout: Layout, batch_size: int) -> Predicted:
    trained = load_trained(layout.model)
    classes = trained.classes
    rows = load_test_rows(layout.prepared, layout.split, classes)
    log.info("evaluating on %d test images, %d classes", len(rows), len(classes))
    probabilities = predict_rows(trained, layout.prepared, rows, batch_size)
    true = rows["label"].map({name: i for i, name in enumerate(classes)}).to_numpy(np.int64)
    return Predicted(rows, classes, true, probabilities)


def _warn_if_top_k_holds_every_class(k: int, classes: int) -> None:
    if k >= classes:
        log.warning(
            "evaluate.top_k=%d is not below the %d classes: top-k accuracy is 1 by definition "
            "(set top_k: null to choose k from the number of classes)",
            k,
            classes,
        )


@dataclass(frozen=True)
class Curves:
    kind: str  # what the points score, written beside each point for the plot's legend
    roc: list[dict]
    pr: list[dict]


def score(predicted: Predicted, params: EvaluateParams, k: int) -> tuple[dict, Curves]:
    """The metrics (areas under the curves included) and the curves' points."""
    true, probabilities, classes = predicted.true, predicted.probabilities, predicted.classes
    metrics = classification_metrics(true, probabilities, classes, k)
    is_positive, scores, kind = curve_target(true, probabilities, classes, params.positive_class)
    roc, pr, areas = curves(is_positive, scores)
    metrics.update(areas)
    return metrics, Curves(kind, roc, pr)


def _confusion_png(predicted: Predicted) -> bytes:
    labels = range(len(predicted.classes))
    counts = confusion_matrix(predicted.true, predicted.predicted, labels=labels)
    images = len(predicted.rows)
    title = f"Confusion matrix, {images} test images\n(colour: share of the true class)"
    return confusion_image(counts, predicted.classes, title)


def _gallery_png(prepared_dir: Path, predicted: Predicted, per_class: int) -> bytes:
    rows, true, probabilities = predicted.rows, predicted.true, predicted.probabilities
    chosen = most_confident_mistakes(true, probabilities, rows["id"].to_numpy(), per_class)
    tiles = gallery_tiles(prepared_dir, rows, chosen, true, probabilities, predicted.classes)
    return gallery_image(
        tiles,
        f"Most confident mistakes\n(up to {per_class} per true class)",
        f"no mistakes among {len(rows)} test images"
        if per_class
        else "gallery turned off (evaluate.gallery_per_class: 0)",
    )


def write_plots(
    layout: Layout, predicted: Predicted, metrics: dict, curve: Curves, gallery_per_class: int
) -> None:
    """The plot data for dvc.yaml's templates and the two pictures, as one folder."""
    per_class = [{"class_name": name, **figures} for name, figures in metrics["per_class"].items()]
    with atomic.atomic_dir(layout.evaluate_plots) as scratch:
        atomic.write_json(scratch / PER_CLASS_FILE, per_class)
        atomic.write_json(scratch / ROC_FILE, [{"curve": curve.kind, **p} for p in curve.roc])
        atomic.write_json(scratch / PR_FILE, [{"curve": curve.kind, **p} for p in curve.pr])
        atomic.write_bytes(scratch / CONFUSION_IMAGE, _confusion_png(predicted))
        title = f"Per class, {len(predicted.rows)} test images"
        atomic.write_bytes(scratch / PER_CLASS_IMAGE, per_class_image(metrics["per_class"], title))
        gallery = _gallery_png(layout.prepared, predicted, gallery_per_class)
        atomic.write_bytes(scratch / GALLERY_IMAGE, gallery)


def _log_metrics(metrics: dict, k: int, classes: int) -> None:
    log.info(
        "test accuracy %.4f, balanced %.4f, macro F1 %.4f, top-%d %.4f, log loss %.4f",
        metrics["accuracy"],
        metrics["balanced_accuracy"],
        metrics["macro_f1"],
        min(k, classes),
        metrics["top_k_accuracy"],
        metrics["log_loss"],
    )


def leakage_metrics(split_dir: Path) -> dict:
    """What split measured: test images with a near duplicate in train (None: not measured).

    Beside the accuracy, so a score inflated by near copies of training images shows.
    """
    path = split_dir / LEAKAGE
    if not path.exists():
        raise MissingInputError(f"{path} is missing: rerun the split stage (dvc repro split)")
    leakage = json.loads(path.read_text(encoding="utf-8"))
    return {key: leakage.get(key) for key in (LEAKAGE_FRACTION, LEAKAGE_COUNT)}


def run(params: EvaluateParams, layout: Layout) -> dict:
    predicted = predict_test_split(layout, params.batch_size)
    classes = len(predicted.classes)
    k = params.k_for(classes)
    _warn_if_top_k_holds_every_class(k, classes)
    metrics, curve = score(predicted, params, k)
    predictions = prediction_table(
        predicted.rows, predicted.true, predicted.probabilities, predicted.classes, k
    )
    write_plots(layout, predicted, metrics, curve, params.gallery_per_class)
    atomic.write_text(layout.predictions, predictions.to_csv(index=False, lineterminator="\n"))
    metrics.update(leakage_metrics(layout.split))
    atomic.write_json(layout.metrics, metrics)
    _log_metrics(metrics, k, classes)
    return metrics


def main() -> None:
    run_main("evaluate", lambda: run(load_params().evaluate, Layout()))


if __name__ == "__main__":
    main()

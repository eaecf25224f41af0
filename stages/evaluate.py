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

import logging
from collections.abc import Iterator
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
from imgpipe.errors import StageError
from imgpipe.images import decode_png_array
from imgpipe.params import EvaluateParams, load_params
from imgpipe.plots import Tile, confusion_image, gallery_image
from imgpipe.shards import read_images, read_manifest, split_rows
from imgpipe.trained import Trained, load_trained, top_k

log = logging.getLogger("imgpipe.evaluate")

MODEL_DIR = Path("data/model")
PREPARED_DIR = Path("data/prepared")
SPLIT_DIR = Path("data/split")
METRICS_FILE = Path("reports/metrics.json")
PREDICTIONS_FILE = Path("reports/predictions.csv")
PLOTS_DIR = Path("reports/evaluate")

# Names inside PLOTS_DIR; dvc.yaml's plots section refers to them.
PER_CLASS_FILE = "per_class.json"
ROC_FILE = "roc.json"
PR_FILE = "precision_recall.json"
CONFUSION_IMAGE = "confusion_normalized.png"
GALLERY_IMAGE = "mistakes.png"

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
            )
            for i in picks
        ]
        gallery.append((classes[label], tiles))
    return gallery


def run(
    params: EvaluateParams,
    model_dir: Path,
    prepared_dir: Path,
    split_dir: Path,
    metrics_file: Path,
    predictions_file: Path,
    plots_dir: Path,
) -> dict:
    trained = load_trained(model_dir)
    classes = trained.classes
    rows = load_test_rows(prepared_dir, split_dir, classes)
    log.info("evaluating on %d test images, %d classes", len(rows), len(classes))
    probabilities = predict_rows(trained, prepared_dir, rows, params.batch_size)
    true = rows["label"].map({name: i for i, name in enumerate(classes)}).to_numpy(np.int64)
    k = params.top_k
    if k >= len(classes):
        log.warning(
            "evaluate.top_k=%d is not below the %d classes: top-k accuracy is 1 by definition",
            k,
            len(classes),
        )

    metrics = classification_metrics(true, probabilities, classes, k)
    is_positive, scores, curve_kind = curve_target(
        true, probabilities, classes, params.positive_class
    )
    roc, pr, areas = curves(is_positive, scores)
    metrics.update(areas)
    predictions = prediction_table(rows, true, probabilities, classes, k)
    chosen = most_confident_mistakes(
        true, probabilities, rows["id"].to_numpy(), params.gallery_per_class
    )
    counts = confusion_matrix(true, np.argmax(probabilities, axis=1), labels=range(len(classes)))

    with atomic.atomic_dir(plots_dir) as scratch:
        atomic.write_json(
            scratch / PER_CLASS_FILE,
            [{"class_name": name, **figures} for name, figures in metrics["per_class"].items()],
        )
        atomic.write_json(scratch / ROC_FILE, [{"curve": curve_kind, **p} for p in roc])
        atomic.write_json(scratch / PR_FILE, [{"curve": curve_kind, **p} for p in pr])
        atomic.write_bytes(
            scratch / CONFUSION_IMAGE,
            confusion_image(
                counts,
                classes,
                f"Confusion matrix, {len(rows)} test images\n(colour: share of the true class)",
            ),
        )
        atomic.write_bytes(
            scratch / GALLERY_IMAGE,
            gallery_image(
                gallery_tiles(prepared_dir, rows, chosen, true, probabilities, classes),
                f"Most confident mistakes\n(up to {params.gallery_per_class} per true class)",
                f"no mistakes among {len(rows)} test images"
                if params.gallery_per_class
                else "gallery turned off (evaluate.gallery_per_class: 0)",
            ),
        )
    atomic.write_text(predictions_file, predictions.to_csv(index=False, lineterminator="\n"))
    atomic.write_json(metrics_file, metrics)
    log.info(
        "test accuracy %.4f, balanced %.4f, macro F1 %.4f, top-%d %.4f, log loss %.4f",
        metrics["accuracy"],
        metrics["balanced_accuracy"],
        metrics["macro_f1"],
        min(k, len(classes)),
        metrics["top_k_accuracy"],
        metrics["log_loss"],
    )
    return metrics


def main() -> None:
    run_main(
        "evaluate",
        lambda: run(
            load_params().evaluate,
            MODEL_DIR,
            PREPARED_DIR,
            SPLIT_DIR,
            METRICS_FILE,
            PREDICTIONS_FILE,
            PLOTS_DIR,
        ),
    )


if __name__ == "__main__":
    main()

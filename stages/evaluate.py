"""evaluate: test-split metrics and a confusion matrix of the trained model.

``reports/metrics.json`` keeps stable key names so ``dvc metrics diff`` and ``dvc exp show``
compare experiments; the confusion data is declared as a DVC plot with class names.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from imgpipe import atomic
from imgpipe.cli import run_main
from imgpipe.params import EvaluateParams, load_params
from imgpipe.shards import read_manifest, read_split

log = logging.getLogger("imgpipe.evaluate")

MODEL_DIR = Path("data/model")
PREPARED_DIR = Path("data/prepared")
SPLIT_DIR = Path("data/split")
METRICS_FILE = Path("reports/metrics.json")
CONFUSION_FILE = Path("reports/evaluate/confusion.json")


def classification_metrics(true: np.ndarray, predicted: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, macro F1 and per-class precision / recall / F1 / support."""
    labels = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        true, predicted, labels=labels, zero_division=0
    )
    return {
        "accuracy": round(float(accuracy_score(true, predicted)), 6),
        "macro_f1": round(
            float(f1_score(true, predicted, labels=labels, average="macro", zero_division=0)), 6
        ),
        "test_images": len(true),
        "per_class": {
            name: {
                "precision": round(float(precision[i]), 6),
                "recall": round(float(recall[i]), 6),
                "f1": round(float(f1[i]), 6),
                "support": int(support[i]),
            }
            for i, name in enumerate(classes)
        },
    }


def run(
    params: EvaluateParams,
    model_dir: Path,
    prepared_dir: Path,
    split_dir: Path,
    metrics_file: Path,
    confusion_file: Path,
) -> dict:
    import keras

    from imgpipe.dataset import encoded_images, image_batches

    classes = json.loads((model_dir / "classes.json").read_text(encoding="utf-8"))
    standard = json.loads((model_dir / "preprocessing.json").read_text(encoding="utf-8"))
    model = keras.models.load_model(model_dir / "model.keras")
    prepared = read_manifest(prepared_dir)
    test_rows = prepared[prepared["id"].isin(read_split(split_dir, "test")["id"])]
    class_index = {name: i for i, name in enumerate(classes)}
    batches = image_batches(
        encoded_images([(prepared_dir, test_rows)], class_index),
        int(standard["channels"]),
        params.batch_size,
    )
    true, predicted = [], []
    for pixels, labels in batches:
        probabilities = model.predict_on_batch(pixels)
        true.append(labels.numpy())
        predicted.append(np.argmax(probabilities, axis=1))
    true, predicted = np.concatenate(true), np.concatenate(predicted)

    metrics = classification_metrics(true, predicted, classes)
    atomic.write_json(metrics_file, metrics)
    atomic.write_json(
        confusion_file,
        [
            {"actual": classes[t], "predicted": classes[p]}
            for t, p in zip(true, predicted, strict=True)
        ],
    )
    log.info(
        "test accuracy %.4f, macro F1 %.4f on %d images",
        metrics["accuracy"],
        metrics["macro_f1"],
        len(true),
    )
    return metrics


def main() -> None:
    run_main(
        "evaluate",
        lambda: run(
            load_params().evaluate, MODEL_DIR, PREPARED_DIR, SPLIT_DIR, METRICS_FILE, CONFUSION_FILE
        ),
    )


if __name__ == "__main__":
    main()

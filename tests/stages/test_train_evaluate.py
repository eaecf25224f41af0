"""Training and evaluation on a tiny dataset: real Keras, a few seconds."""

import json

import numpy as np
import pytest

from imgpipe.params import AugmentOperation, AugmentParams, EvaluateParams, TrainParams
from stages import augment, evaluate, train


@pytest.fixture
def trained(prepared_dir, split_dir, tmp_path):
    aug = tmp_path / "aug"
    ops = [
        AugmentOperation(name="rotate", probability=1, max_left_rotation=5, max_right_rotation=5)
    ]
    augment.run(
        AugmentParams(per_class=4, operations=ops, workers=1), 1, prepared_dir, split_dir, aug
    )
    params = TrainParams(epochs=8, batch_size=16, lr=0.003)
    train.run(params, 5, prepared_dir, split_dir, aug, tmp_path / "model", tmp_path / "live")
    return tmp_path


def test_training_writes_model_with_everything_needed_to_use_it(trained):
    model_dir = trained / "model"
    assert (model_dir / "model.keras").stat().st_size > 0
    assert json.loads((model_dir / "classes.json").read_text()) == ["circle", "square", "triangle"]
    assert json.loads((model_dir / "preprocessing.json").read_text())["width"] == 16
    assert json.loads((model_dir / "params.json").read_text())["seed"] == 5
    live = json.loads((trained / "live" / "metrics.json").read_text())
    assert live["step"] == 7
    assert live["train_images_per_second"] > 0
    history = (trained / "live" / "plots" / "metrics" / "eval" / "accuracy.tsv").read_text()
    assert len(history.strip().splitlines()) == 9  # header and one row per epoch


def test_evaluation_of_a_learnable_dataset(trained, prepared_dir, split_dir):
    metrics_file = trained / "reports" / "metrics.json"
    confusion_file = trained / "reports" / "confusion.json"
    evaluate.run(
        EvaluateParams(), trained / "model", prepared_dir, split_dir, metrics_file, confusion_file
    )
    metrics = json.loads(metrics_file.read_text())
    assert metrics["test_images"] == 12
    assert metrics["accuracy"] >= 0.9  # the stripe position gives the class away
    assert set(metrics["per_class"]) == {"circle", "square", "triangle"}
    confusion = json.loads(confusion_file.read_text())
    assert len(confusion) == 12
    assert {row["actual"] for row in confusion} == {"circle", "square", "triangle"}


def test_metrics_match_a_hand_computed_case():
    true = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, 2, 2])
    metrics = evaluate.classification_metrics(true, predicted, ["a", "b", "c"])
    assert metrics["accuracy"] == pytest.approx(4 / 6, abs=1e-6)
    # a: P=1, R=2/3, F1=0.8; b: P=1/2, R=1/2, F1=1/2; c: P=1/2, R=1, F1=2/3
    assert metrics["per_class"]["a"] == {
        "precision": 1.0,
        "recall": 0.666667,
        "f1": 0.8,
        "support": 3,
    }
    assert metrics["per_class"]["c"]["f1"] == pytest.approx(2 / 3, abs=1e-6)
    assert metrics["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3, abs=1e-6)

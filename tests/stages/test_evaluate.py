"""Evaluation: metrics against hand-computed cases, and the real stage on a tiny trained model."""

from __future__ import annotations

import io
import json
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from imgpipe.errors import MissingInputError, ParamsError, StageError
from imgpipe.images import decode_png_array
from imgpipe.layout import LEAKAGE
from imgpipe.params import EvaluateParams, parse_params
from imgpipe.shards import read_images, read_manifest, read_split
from stages import evaluate
from tests.conftest import layout_of, tree_bytes
from tests.tiny_model import CLASSES, constant_model, prepared_project

METRIC_NAMES = {
    "accuracy",
    "balanced_accuracy",
    "macro_f1",
    "weighted_f1",
    "top_k_accuracy",
    "log_loss",
    "test_images",
    "per_class",
    "test_near_duplicates_in_train",
    "test_near_duplicates_in_train_count",
    "roc_auc",
    "average_precision",
}

# Six images of classes a, b, c; predicted (argmax) 0, 0, 1, 1, 2, 2.
TRUE = np.array([0, 0, 0, 1, 1, 2])
PROBABILITIES = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.6, 0.3, 0.1],
        [0.4, 0.5, 0.1],  # a taken for b; a is second, so a top-2 hit
        [0.2, 0.7, 0.1],
        [0.3, 0.1, 0.6],  # b taken for c; b is last, so a top-2 miss
        [0.1, 0.2, 0.7],
    ]
)


def _evaluate(project, out, **params):
    """Evaluate ``project``'s model, writing the reports below ``out``."""
    layout = replace(
        project.layout,
        metrics=out / "metrics.json",
        predictions=out / "predictions.csv",
        evaluate_plots=out / "evaluate",
    )
    return evaluate.run(EvaluateParams(**params), layout)


@pytest.fixture(scope="module")
def evaluated(trained_project, tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluated")
    metrics = _evaluate(trained_project, out, top_k=2)
    return trained_project, out, metrics


def test_metrics_match_a_hand_computed_case():
    metrics = evaluate.classification_metrics(TRUE, PROBABILITIES, ["a", "b", "c"], k=2)
    assert metrics["accuracy"] == pytest.approx(4 / 6, abs=1e-6)
    # recall a = 2/3, b = 1/2, c = 1
    assert metrics["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3, abs=1e-6)
    # a: P=1, R=2/3, F1=0.8; b: P=1/2, R=1/2, F1=1/2; c: P=1/2, R=1, F1=2/3
    assert metrics["per_class"]["a"] == {
        "precision": 1.0,
        "recall": 0.666667,
        "f1": 0.8,
        "support": 3,
    }
    assert metrics["per_class"]["b"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert metrics["per_class"]["c"]["f1"] == pytest.approx(2 / 3, abs=1e-6)
    assert metrics["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3, abs=1e-6)
    assert metrics["weighted_f1"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 2 / 3) / 6, abs=1e-6)
    assert metrics["top_k_accuracy"] == pytest.approx(5 / 6, abs=1e-6)
    true_class_probabilities = [0.7, 0.6, 0.4, 0.7, 0.1, 0.7]
    expected_loss = -sum(math.log(p) for p in true_class_probabilities) / 6
    assert metrics["log_loss"] == pytest.approx(expected_loss, abs=1e-6)
    assert metrics["test_images"] == 6


def test_top_k_accuracy_counts_the_true_class_among_the_k_likeliest():
    assert evaluate.top_k_accuracy(TRUE, PROBABILITIES, 1) == pytest.approx(4 / 6)
    assert evaluate.top_k_accuracy(TRUE, PROBABILITIES, 2) == pytest.approx(5 / 6)
    # k at or above the number of classes holds every class: 1 by definition, no error.
    assert evaluate.top_k_accuracy(TRUE, PROBABILITIES, 3) == 1.0
    assert evaluate.top_k_accuracy(TRUE, PROBABILITIES, 10) == 1.0


def test_two_class_curves_score_the_positive_class():
    true = np.array([0, 0, 0, 1, 1, 1])
    dog = np.array([0.1, 0.4, 0.35, 0.8, 0.3, 0.9])
    probabilities = np.stack([1 - dog, dog], axis=1)
    is_dog, scores, kind = evaluate.curve_target(true, probabilities, ["cat", "dog"], None)
    assert kind == "positive class dog"
    assert scores.tolist() == dog.tolist()
    roc, pr, areas = evaluate.curves(is_dog, scores)
    # 7 of the 9 (dog, cat) pairs have the dog scored higher.
    assert areas["roc_auc"] == pytest.approx(7 / 9, abs=1e-6)
    # ranked .9 dog, .8 dog, .4, .35, .3 dog, .1: precision at each dog is 1, 1, 3/5
    assert areas["average_precision"] == pytest.approx((1 + 1 + 3 / 5) / 3, abs=1e-6)
    assert (roc[0]["fpr"], roc[0]["tpr"], roc[0]["threshold"]) == (0.0, 0.0, None)
    assert (roc[-1]["fpr"], roc[-1]["tpr"]) == (1.0, 1.0)
    assert [p["recall"] for p in pr] == sorted(p["recall"] for p in pr)
    assert pr[0]["recall"] == 0.0 and pr[-1]["recall"] == 1.0
    json.dumps(roc + pr, allow_nan=False)  # no infinity or NaN reaches the plot files

    is_cat, cat_scores, kind = evaluate.curve_target(true, probabilities, ["cat", "dog"], "cat")
    assert kind == "positive class cat" and is_cat.tolist() == (true == 0).tolist()
    assert evaluate.curves(is_cat, cat_scores)[2]["roc_auc"] == pytest.approx(7 / 9, abs=1e-6)
    with pytest.raises(StageError, match=r"evaluate\.positive_class: 'cow' is not a class"):
        evaluate.curve_target(true, probabilities, ["cat", "dog"], "cow")


def test_more_classes_give_a_micro_average_curve():
    is_positive, scores, kind = evaluate.curve_target(TRUE, PROBABILITIES, ["a", "b", "c"], None)
    assert kind.startswith("micro-average")
    assert is_positive.sum() == len(TRUE) and len(scores) == PROBABILITIES.size
    assert is_positive.reshape(PROBABILITIES.shape).argmax(axis=1).tolist() == TRUE.tolist()


def test_most_confident_mistakes_come_surest_first_with_ties_by_id():
    true = np.array([0, 0, 0, 0, 1])
    probabilities = np.array([[0.2, 0.8], [0.1, 0.9], [0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])
    ids = np.array(["d", "c", "b", "a", "e"])
    assert evaluate.most_confident_mistakes(true, probabilities, ids, 5) == {0: [1, 3, 0]}
    assert evaluate.most_confident_mistakes(true, probabilities, ids, 2) == {0: [1, 3]}
    assert evaluate.most_confident_mistakes(true, probabilities, ids, 0) == {}


def test_evaluate_writes_metrics_with_stable_names(evaluated):
    _, out, metrics = evaluated
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert set(metrics) == METRIC_NAMES
    assert metrics["test_images"] == 12
    assert metrics["accuracy"] >= 0.9  # the stripe position gives the class away
    assert metrics["top_k_accuracy"] >= metrics["accuracy"]
    assert set(metrics["per_class"]) == set(CLASSES)
    assert sum(c["support"] for c in metrics["per_class"].values()) == 12
    # As split measured them: no stripe image is a near copy of another across the split.
    assert metrics["test_near_duplicates_in_train"] == 0
    assert metrics["test_near_duplicates_in_train_count"] == 0


def test_predictions_csv_lists_every_test_image_with_its_origin_and_top_k(evaluated):
    project, out, metrics = evaluated
    table = pd.read_csv(out / "predictions.csv", dtype={"id": str}, keep_default_na=False)
    assert list(table.columns) == [
        "id",
        "origin",
        "true_label",
        "predicted_label",
        "correct",
        "top1_label",
        "top1_probability",
        "top2_label",
        "top2_probability",
    ]
    test = read_split(project.split, "test")
    assert table["id"].tolist() == sorted(test["id"])
    manifest = read_manifest(project.prepared).set_index("id")
    assert table["origin"].tolist() == manifest.loc[table["id"], "origin"].tolist()
    assert table["true_label"].tolist() == manifest.loc[table["id"], "label"].tolist()
    assert (table["predicted_label"] == table["top1_label"]).all()
    assert (table["top1_probability"] >= table["top2_probability"]).all()
    assert (table["top1_label"] != table["top2_label"]).all()
    assert table["correct"].mean() == pytest.approx(metrics["accuracy"])


def test_plot_files_hold_what_dvc_plots_draw(evaluated):
    _, out, metrics = evaluated
    plots = out / "evaluate"
    per_class = json.loads((plots / "per_class.json").read_text())
    assert [row["class_name"] for row in per_class] == CLASSES
    assert per_class[0]["f1"] == metrics["per_class"]["circle"]["f1"]
    roc = json.loads((plots / "roc.json").read_text())
    assert roc[0]["curve"].startswith("micro-average")  # three classes
    assert {"fpr", "tpr", "threshold"} <= set(roc[0])
    pr = json.loads((plots / "precision_recall.json").read_text())
    assert {"recall", "precision"} <= set(pr[0])
    for name in ("confusion_normalized.png", "mistakes.png", "per_class.png"):
        with Image.open(plots / name) as image:
            assert image.format == "PNG" and min(image.size) > 100


def test_evaluate_outputs_are_byte_identical_on_a_second_run(evaluated, tmp_path):
    project, out, _ = evaluated
    again = tmp_path / "again"
    _evaluate(project, again, top_k=2)
    assert tree_bytes(again) == tree_bytes(out)


@pytest.fixture(scope="module")
def always_square(tmp_path_factory):
    """Two classes and a model that always answers 'square' with p = e / (e + 1)."""
    project = prepared_project(tmp_path_factory.mktemp("constant"), ["circle", "square"])
    constant_model(project, ["circle", "square"], favourite=1)
    return project


def test_gallery_shows_each_classes_surest_mistakes_with_their_pixels(always_square):
    project = always_square
    out = project.root / "reports"
    metrics = _evaluate(project, out, gallery_per_class=3, positive_class="circle")
    assert metrics["accuracy"] == 0.5
    assert metrics["per_class"]["circle"]["recall"] == 0.0
    assert metrics["roc_auc"] == 0.5  # one score for every image ranks nothing
    roc = json.loads((out / "evaluate" / "roc.json").read_text())
    assert roc[0]["curve"] == "positive class circle"

    rows = evaluate.load_test_rows(project.prepared, project.split, ["circle", "square"])
    probabilities = np.tile([1 / (1 + math.e), math.e / (1 + math.e)], (len(rows), 1))
    true = (rows["label"] == "square").to_numpy(np.int64)
    chosen = evaluate.most_confident_mistakes(true, probabilities, rows["id"].to_numpy(), 3)
    tiles = evaluate.gallery_tiles(
        project.prepared, rows, chosen, true, probabilities, ["circle", "square"]
    )
    assert [name for name, _ in tiles] == ["circle"]  # square is never wrong
    circle_ids = sorted(rows.loc[rows["label"] == "circle", "id"])
    assert [tile.sample_id for tile in tiles[0][1]] == circle_ids[:3]  # equal confidence: by id
    stored = dict(read_images(project.prepared, rows))
    for tile in tiles[0][1]:
        assert (tile.true, tile.predicted) == ("circle", "square")
        assert tile.probability == pytest.approx(math.e / (1 + math.e))
        assert np.array_equal(tile.pixels, decode_png_array(stored[tile.sample_id]))
        origin = rows.loc[rows["id"] == tile.sample_id, "origin"].item()
        assert tile.origin == origin and origin.endswith(".png")  # the file, shown by name

    with Image.open(out / "evaluate" / "mistakes.png") as gallery:
        width_with_three_tiles = gallery.size[0]
    _evaluate(project, out, gallery_per_class=1)
    with Image.open(io.BytesIO((out / "evaluate" / "mistakes.png").read_bytes())) as gallery:
        assert gallery.size[0] < width_with_three_tiles


def _reports_in(tmp_path, project, model):
    """``project``'s data and ``model``, with every report written below ``tmp_path``."""
    return layout_of(tmp_path, prepared=project.prepared, split=project.split, model=model)


def test_missing_model_is_reported_with_what_to_run(tmp_path, always_square):
    project = always_square
    layout = _reports_in(tmp_path, project, model=tmp_path / "no-model")
    with pytest.raises(StageError, match=r"model\.keras is missing: train a model first"):
        evaluate.run(EvaluateParams(), layout)
    assert not layout.metrics.exists()


def test_test_labels_unknown_to_the_model_stop_the_stage(tmp_path, always_square):
    project = always_square
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for name in ("model.keras", "preprocessing.json"):
        (model_dir / name).write_bytes((project.model / name).read_bytes())
    (model_dir / "classes.json").write_text(json.dumps(["cat", "dog"]))
    layout = _reports_in(tmp_path, project, model=model_dir)
    with pytest.raises(StageError, match=r"labels the model does not know: \['circle', 'square'\]"):
        evaluate.run(EvaluateParams(), layout)


def test_evaluate_params_are_validated_by_name():
    assert parse_params({"evaluate": {"top_k": "5"}}).evaluate.top_k == 5
    with pytest.raises(
        ParamsError, match=r"evaluate\.top_k: Input should be greater than or equal"
    ):
        parse_params({"evaluate": {"top_k": 0}})
    with pytest.raises(ParamsError, match=r"evaluate\.gallery_per_class"):
        parse_params({"evaluate": {"gallery_per_class": -1}})
    with pytest.raises(ParamsError, match=r"evaluate\.topk: unknown key; allowed keys: batch_size"):
        parse_params({"evaluate": {"topk": 3}})


def test_top_k_is_chosen_from_the_number_of_classes_unless_set():
    assert [EvaluateParams().k_for(n) for n in (2, 3, 4, 10, 100)] == [1, 2, 3, 3, 3]
    assert EvaluateParams(top_k=5).k_for(3) == 5  # as set; evaluate then warns


def test_with_top_k_unset_three_classes_are_ranked_two_deep(trained_project, tmp_path, caplog):
    metrics = _evaluate(trained_project, tmp_path)
    assert "top_k" not in caplog.text  # no warning: k is below the number of classes
    table = pd.read_csv(tmp_path / "predictions.csv")
    assert {"top1_label", "top2_label"} <= set(table.columns) and "top3_label" not in table
    assert 0 <= metrics["top_k_accuracy"] <= 1


def test_gallery_tiles_carry_the_file_they_show(trained_project):
    from imgpipe.plots import _short_name

    assert _short_name("raw/images/cat/IMG_0001.jpg") == "IMG_0001.jpg"
    long = _short_name("a/" + "x" * 40 + ".jpg")
    assert len(long) <= 22 and long.endswith(".jpg") and "…" in long


def test_leakage_figures_come_from_what_split_wrote(tmp_path):
    (tmp_path / LEAKAGE).write_text(
        json.dumps(
            {"test_near_duplicates_in_train": 0.25, "test_near_duplicates_in_train_count": 3}
        )
    )
    assert evaluate.leakage_metrics(tmp_path) == {
        "test_near_duplicates_in_train": 0.25,
        "test_near_duplicates_in_train_count": 3,
    }
    with pytest.raises(MissingInputError, match=r"leakage.json is missing.*dvc repro split"):
        evaluate.leakage_metrics(tmp_path / "nowhere")

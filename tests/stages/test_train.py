"""Training on a tiny dataset: real Keras, a few seconds per run."""

import csv
import json
import os
import shutil
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import yaml
from PIL import Image

from imgpipe.errors import StageError
from imgpipe.params import TrainParams
from stages import train
from tests.conftest import REPO_ROOT, layout_of
from tests.tiny_model import SEED, TRAIN

SMALL = {"epochs": 3, "batch_size": 16, "lr": 0.003}


class Interrupted(Exception):
    pass


class StopAfterEpoch(keras.callbacks.Callback):
    """Runs after the stage's own callbacks, so the backup of the epoch is already written."""

    def __init__(self, epoch: int = 1) -> None:
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            raise Interrupted


@pytest.fixture
def inputs(trained_project):
    """The shared project's layout: its prepared, split and augmented data are read, not changed."""
    return trained_project.layout


def _layout(inputs, out):
    """Train on the data of ``inputs``, writing everything train writes below ``out``."""
    return layout_of(out, prepared=inputs.prepared, split=inputs.split, augmented=inputs.augmented)


def _train(inputs, out, params=None, seed=SEED, **kwargs):
    params = params or TrainParams(**SMALL)
    return train.run(params, seed, _layout(inputs, out), **kwargs)


def _logged(live_dir, metric="accuracy", column="step"):
    with open(live_dir / "plots" / "metrics" / "eval" / f"{metric}.tsv", newline="") as handle:
        return [float(row[column]) for row in csv.DictReader(handle, delimiter="\t")]


def _epochs_logged(live_dir):
    return [int(step) for step in _logged(live_dir)]


def test_training_writes_model_with_everything_needed_to_use_it(trained_project):
    layout, result = trained_project.layout, trained_project.trained
    model_dir = layout.model
    model = keras.models.load_model(model_dir / "model.keras")
    probabilities = model.predict_on_batch(np.zeros((2, 16, 16, 3), dtype=np.uint8))
    assert probabilities.shape == (2, 3)
    assert json.loads((model_dir / "classes.json").read_text()) == ["circle", "square", "triangle"]
    assert json.loads((model_dir / "preprocessing.json").read_text())["width"] == 16
    resolved = json.loads((model_dir / "params.json").read_text())
    assert resolved["seed"] == SEED and resolved["model"] == "three_conv"
    assert resolved["layers"][0] == {
        "type": "conv",
        "filters": 16,
        "kernel": 5,
        "stride": 1,
        "padding": "same",
        "activation": "relu",
    }
    assert resolved["input_shape"] == [16, 16, 3]
    live = json.loads((layout.train_live / "metrics.json").read_text())
    assert live["step"] == TRAIN.epochs - 1 and live["epochs_run"] == TRAIN.epochs
    assert not {"train_seconds", "train_images_per_second"} & set(live)  # would vary by run
    with Image.open(layout.train_curves) as curves:  # the curves as a PNG, for GitHub readers
        assert curves.format == "PNG" and curves.size[0] > 2 * curves.size[1]
    timing = json.loads(layout.train_timing.read_text())
    assert timing["train_images_per_second"] > 0 and timing["train_seconds"] > 0
    assert _epochs_logged(layout.train_live) == list(range(TRAIN.epochs))
    assert result["val_accuracy"] >= 0.5
    assert not layout.train_backup.exists()  # removed once the model is written


def test_same_seed_gives_the_same_metrics(trained_project, inputs, tmp_path):
    again = _train(inputs, tmp_path / "again", TRAIN, SEED)
    assert again["history"] == trained_project.trained["history"]
    # Another seed changes the run from its first epoch on: one epoch shows it.
    other = _train(inputs, tmp_path / "other", TRAIN.model_copy(update={"epochs": 1}), SEED + 1)
    assert other["history"] != {name: values[:1] for name, values in again["history"].items()}


@pytest.fixture(scope="module")
def interrupted(trained_project, tmp_path_factory):
    """The shared model's training, stopped after its first epoch: read-only, copy the backup."""
    layout = _layout(trained_project.layout, tmp_path_factory.mktemp("interrupted"))
    with pytest.raises(Interrupted):
        train.run(TRAIN, SEED, layout, extra_callbacks=[StopAfterEpoch(1)])
    return layout


def _resume_from(interrupted, inputs, out):
    """A layout below ``out`` holding a copy of the interrupted run's backup, and nothing else
    it wrote: DVC deletes a stage's outputs before rerunning it."""
    layout = _layout(inputs, out)
    shutil.copytree(interrupted.train_backup, layout.train_backup)
    return layout


def test_interrupted_run_resumes_at_its_next_epoch(trained_project, interrupted, inputs, tmp_path):
    assert not interrupted.model.exists()
    (backup,) = interrupted.train_backup.iterdir()
    assert json.loads((backup / "keras" / "training_metadata.json").read_text())["epoch"] == 1

    layout = _resume_from(interrupted, inputs, tmp_path)
    resumed = train.run(TRAIN, SEED, layout)
    # zero-based: training continued at the second epoch
    assert resumed["epochs"] == list(range(1, TRAIN.epochs))
    # the history of the epoch before the kill came back from the backup
    assert _epochs_logged(layout.train_live) == list(range(TRAIN.epochs))
    live = json.loads((layout.train_live / "metrics.json").read_text())
    assert live["resumed_at_epoch"] == 1 and live["step"] == TRAIN.epochs - 1
    assert (layout.model / "model.keras").exists()
    assert not layout.train_backup.exists()
    # Same data order, weights, optimizer and dropout draws: the uninterrupted run's metrics.
    uninterrupted = trained_project.trained
    assert resumed["history"] == {k: v[1:] for k, v in uninterrupted["history"].items()}


class SpoilEpoch(keras.callbacks.Callback):
    """A huge learning rate for one epoch, so that epoch cannot be the best one."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            self.model.optimizer.learning_rate.assign(5.0)


def test_killed_after_the_last_epoch_keeps_the_best_weights_without_training(inputs, tmp_path):
    params = TrainParams(**SMALL, early_stopping={"patience": 5})
    with pytest.raises(Interrupted):
        _train(inputs, tmp_path, params, extra_callbacks=[SpoilEpoch(2), StopAfterEpoch(3)])
    result = _train(inputs, tmp_path, params)
    assert result["epochs"] == []
    val_losses = _logged(_layout(inputs, tmp_path).train_live, "loss", "loss")
    best = min(val_losses[:2])
    assert len(val_losses) == 3 and not val_losses[2] <= best  # worse, or not a number
    # The early-stopping state was restored from the backup, so the best epoch's weights win.
    model = keras.models.load_model(_layout(inputs, tmp_path).model / "model.keras")
    assert _val_loss(model, inputs, 0.0) == pytest.approx(best, rel=1e-5)


def test_a_backup_cut_off_mid_write_is_discarded(interrupted, inputs, tmp_path):
    layout = _resume_from(interrupted, inputs, tmp_path)
    (metadata,) = layout.train_backup.glob("*/keras/training_metadata.json")
    metadata.write_text('{"epo')
    assert train.run(TRAIN, SEED, layout)["epochs"] == list(range(TRAIN.epochs))


def test_a_different_experiment_never_resumes_from_another_ones_backup(
    interrupted, inputs, tmp_path
):
    layout = _resume_from(interrupted, inputs, tmp_path)
    other = train.run(TRAIN.model_copy(update={"lr": TRAIN.lr / 2}), SEED, layout)
    assert other["epochs"] == list(range(TRAIN.epochs))
    assert len(list(layout.train_backup.iterdir())) == 1  # the first one's, kept for it


def test_training_options_together(inputs, tmp_path):
    params = TrainParams(
        **{**SMALL, "epochs": 4},
        optimizer="sgd",
        momentum=0.8,
        schedule="cosine",
        label_smoothing=0.1,
        class_weights="balanced",
        early_stopping={"patience": 1, "monitor": "val_loss"},
        augmentation=[{"type": "zoom", "factor": 0.1}, {"type": "contrast", "factor": 0.1}],
        tensorboard=True,
        strategy="mirrored",
    )
    result = _train(inputs, tmp_path, params)
    layout = _layout(inputs, tmp_path)
    assert list(layout.tensorboard.rglob("events.out.tfevents.*"))
    resolved = json.loads((layout.model / "params.json").read_text())
    assert resolved["augmentation"][0] == {"type": "zoom", "factor": 0.1}
    assert resolved["replicas"] >= 1
    weights = resolved["class_weights_resolved"]
    assert set(weights) == {"circle", "square", "triangle"} and min(weights.values()) > 0
    # Early stopping restored the best epoch's weights: the saved model scores its val loss.
    model = keras.models.load_model(layout.model / "model.keras")
    assert _val_loss(model, inputs, 0.1) == pytest.approx(min(result["history"]["val_loss"]))


def _val_loss(model, inputs, smoothing):
    import tensorflow as tf

    from imgpipe.dataset import encoded_images, image_batches
    from imgpipe.shards import read_manifest, read_split

    prepared_dir, split_dir = inputs.prepared, inputs.split
    rows = read_manifest(prepared_dir)
    rows = rows[rows["id"].isin(read_split(split_dir, "val")["id"])]
    classes = {"circle": 0, "square": 1, "triangle": 2}
    batches = image_batches(encoded_images([(prepared_dir, rows)], classes), 3, 16)
    model.compile(
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=smoothing),
        metrics=["accuracy"],
    )
    data = batches.map(lambda x, y: (x, tf.one_hot(y, 3)))
    return model.evaluate(data, verbose=0, return_dict=True)["loss"]


def test_plateau_schedule_class_weight_map_and_mixed_precision(inputs, tmp_path):
    params = TrainParams(
        **{**SMALL, "epochs": 2},
        schedule="reduce_on_plateau",
        plateau_patience=1,
        class_weights={"circle": 2.0},
        mixed_precision=True,
    )
    result = _train(inputs, tmp_path, params)
    assert "learning_rate" in result["history"]
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the run
    weights = json.loads((_layout(inputs, tmp_path).model / "params.json").read_text())
    assert weights["class_weights_resolved"] == {"circle": 2.0, "square": 1.0, "triangle": 1.0}


def test_a_layer_list_too_deep_for_the_images_stops_with_a_clear_error(inputs, tmp_path):
    params = TrainParams(**SMALL, model=[{"type": "max_pool"}] * 5 + [{"type": "flatten"}])
    with pytest.raises(StageError, match=r"train.model: layer 5 \(max_pool\): downsamples"):
        _train(inputs, tmp_path, params)


def test_unknown_class_in_class_weights_is_refused(inputs, tmp_path):
    params = TrainParams(**SMALL, class_weights={"circel": 2.0})
    with pytest.raises(StageError, match=r"unknown class\(es\) \['circel'\]"):
        _train(inputs, tmp_path, params)


def test_a_killed_stage_process_resumes_when_rerun(inputs, tmp_path):
    """The real thing: ``python -m stages.train`` killed with SIGKILL, then run again."""
    project = tmp_path / "project"
    for name in ("prepared", "split", "augmented"):
        shutil.copytree(getattr(inputs, name), project / "data" / name)
    params = {"base": {"seed": 5}, "train": {**SMALL, "epochs": 8}}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, "-m", "stages.train"]
    first = subprocess.Popen(command, cwd=project, env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list(project.glob(".train-backup/*/keras/training_metadata.json")):
            assert first.poll() is None, "training ended before it could be killed"
            assert time.monotonic() < deadline, "no backup appeared"
            time.sleep(0.02)
    finally:
        first.kill()  # SIGKILL: no cleanup code runs
        first.wait()
    assert not (project / "data" / "model").exists()

    subprocess.run(command, cwd=project, env=env, check=True, capture_output=True)
    live = json.loads((project / "reports" / "train" / "metrics.json").read_text())
    assert 1 <= live["resumed_at_epoch"] < 8
    assert live["epochs_run"] == 8 - live["resumed_at_epoch"]
    assert _epochs_logged(project / "reports" / "train") == list(range(8))
    assert (project / "data" / "model" / "model.keras").exists()
    assert not (project / ".train-backup").exists()

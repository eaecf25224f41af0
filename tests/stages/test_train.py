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

from imgpipe.errors import StageError
from imgpipe.params import AugmentOperation, AugmentParams, TrainParams
from stages import augment, train
from tests.conftest import REPO_ROOT

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
def inputs(prepared_dir, split_dir, tmp_path):
    aug = tmp_path / "aug"
    ops = [
        AugmentOperation(name="rotate", probability=1, max_left_rotation=5, max_right_rotation=5)
    ]
    augment.run(
        AugmentParams(per_class=4, operations=ops, workers=1), 1, prepared_dir, split_dir, aug
    )
    return prepared_dir, split_dir, aug


def _train(inputs, out, params=None, seed=5, **kwargs):
    params = params or TrainParams(**SMALL)
    return train.run(
        params, seed, *inputs, out / "model", out / "live", out / "backup", out / "tb", **kwargs
    )


def _logged(live_dir, metric="accuracy", column="step"):
    with open(live_dir / "plots" / "metrics" / "eval" / f"{metric}.tsv", newline="") as handle:
        return [float(row[column]) for row in csv.DictReader(handle, delimiter="\t")]


def _epochs_logged(live_dir):
    return [int(step) for step in _logged(live_dir)]


def test_training_writes_model_with_everything_needed_to_use_it(inputs, tmp_path):
    result = _train(inputs, tmp_path)
    model_dir = tmp_path / "model"
    model = keras.models.load_model(model_dir / "model.keras")
    probabilities = model.predict_on_batch(np.zeros((2, 16, 16, 3), dtype=np.uint8))
    assert probabilities.shape == (2, 3)
    assert json.loads((model_dir / "classes.json").read_text()) == ["circle", "square", "triangle"]
    assert json.loads((model_dir / "preprocessing.json").read_text())["width"] == 16
    resolved = json.loads((model_dir / "params.json").read_text())
    assert resolved["seed"] == 5 and resolved["model"] == "three_conv"
    assert resolved["layers"][0] == {
        "type": "conv",
        "filters": 16,
        "kernel": 5,
        "stride": 1,
        "padding": "same",
        "activation": "relu",
    }
    assert resolved["input_shape"] == [16, 16, 3]
    live = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert live["step"] == 2 and live["epochs_run"] == 3
    assert live["train_images_per_second"] > 0 and live["train_seconds"] > 0
    assert _epochs_logged(tmp_path / "live") == [0, 1, 2]
    assert result["val_accuracy"] >= 0.5
    assert not (tmp_path / "backup").exists()  # removed once the model is written


def test_same_seed_gives_the_same_metrics(inputs, tmp_path):
    first = _train(inputs, tmp_path / "one")
    second = _train(inputs, tmp_path / "two")
    assert first["history"] == second["history"]
    other = _train(inputs, tmp_path / "three", seed=6)
    assert other["history"] != first["history"]


def test_interrupted_run_resumes_at_its_next_epoch(inputs, tmp_path):
    with pytest.raises(Interrupted):
        _train(inputs, tmp_path, extra_callbacks=[StopAfterEpoch(1)])
    assert not (tmp_path / "model").exists()
    (backup,) = (tmp_path / "backup").iterdir()
    assert json.loads((backup / "keras" / "training_metadata.json").read_text())["epoch"] == 1

    # DVC deletes the stage's outputs before rerunning it; the history must come back anyway.
    for leftover in (tmp_path / "live").iterdir():
        leftover.unlink() if leftover.is_file() else None
    resumed = _train(inputs, tmp_path)
    assert resumed["epochs"] == [1, 2]  # zero-based: training continued at epoch 2 of 3
    assert _epochs_logged(tmp_path / "live") == [0, 1, 2]
    live = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert live["resumed_at_epoch"] == 1 and live["step"] == 2
    assert (tmp_path / "model" / "model.keras").exists()
    assert not (tmp_path / "backup").exists()
    # Same data order, weights, optimizer and dropout draws: the uninterrupted run's metrics.
    uninterrupted = _train(inputs, tmp_path / "uninterrupted")
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
    val_losses = _logged(tmp_path / "live", "loss", "loss")
    best = min(val_losses[:2])
    assert len(val_losses) == 3 and not val_losses[2] <= best  # worse, or not a number
    # The early-stopping state was restored from the backup, so the best epoch's weights win.
    model = keras.models.load_model(tmp_path / "model" / "model.keras")
    assert _val_loss(model, inputs, 0.0) == pytest.approx(best, rel=1e-5)


def test_a_backup_cut_off_mid_write_is_discarded(inputs, tmp_path):
    with pytest.raises(Interrupted):
        _train(inputs, tmp_path, extra_callbacks=[StopAfterEpoch(1)])
    (metadata,) = (tmp_path / "backup").glob("*/keras/training_metadata.json")
    metadata.write_text('{"epo')
    assert _train(inputs, tmp_path)["epochs"] == [0, 1, 2]


def test_a_different_experiment_never_resumes_from_another_ones_backup(inputs, tmp_path):
    with pytest.raises(Interrupted):
        _train(inputs, tmp_path, extra_callbacks=[StopAfterEpoch(1)])
    other = _train(inputs, tmp_path, TrainParams(**{**SMALL, "lr": 0.002}))
    assert other["epochs"] == [0, 1, 2]
    assert len(list((tmp_path / "backup").iterdir())) == 1  # the first one's, kept for it


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
    assert list((tmp_path / "tb").rglob("events.out.tfevents.*"))
    resolved = json.loads((tmp_path / "model" / "params.json").read_text())
    assert resolved["augmentation"][0] == {"type": "zoom", "factor": 0.1}
    assert resolved["replicas"] >= 1
    weights = resolved["class_weights_resolved"]
    assert set(weights) == {"circle", "square", "triangle"} and min(weights.values()) > 0
    # Early stopping restored the best epoch's weights: the saved model scores its val loss.
    model = keras.models.load_model(tmp_path / "model" / "model.keras")
    assert _val_loss(model, inputs, 0.1) == pytest.approx(min(result["history"]["val_loss"]))


def _val_loss(model, inputs, smoothing):
    import tensorflow as tf

    from imgpipe.dataset import encoded_images, image_batches
    from imgpipe.shards import read_manifest, read_split

    prepared_dir, split_dir, _ = inputs
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
    weights = json.loads((tmp_path / "model" / "params.json").read_text())
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
    for name, source in zip(("prepared", "split", "augmented"), inputs, strict=True):
        shutil.copytree(source, project / "data" / name)
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

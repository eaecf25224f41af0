"""Training on a tiny dataset: real Keras, a few seconds."""

import json

import pytest

from imgpipe.params import AugmentOperation, AugmentParams, TrainParams
from stages import augment, train


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

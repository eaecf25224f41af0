"""Every preset builds and trains one step; ResNets at 32x32, the smallest size they fit."""

import keras
import numpy as np
import pytest

from imgpipe.layers import PRESETS, LayerListError
from imgpipe.models import build_model


def _one_step(model: keras.Model, shape: tuple[int, int, int], classes: int) -> float:
    # Eager: tracing a 101-layer graph costs tens of seconds, one eager step a few.
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", run_eagerly=True)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(4, *shape), dtype=np.uint8)
    before = [w.copy() for w in model.get_weights()]
    loss = float(model.train_on_batch(pixels, np.arange(4) % classes))
    changed = any(
        not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True)
    )
    assert changed, "a training step left every weight unchanged"
    return loss


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_and_trains_a_step(name):
    backbone = PRESETS[name][0]["type"] == "backbone"  # grey images: the three-channel copy too
    shape = (32, 32, 1) if backbone else (32, 32, 3) if name.startswith("resnet") else (16, 16, 1)
    model = build_model(name, shape, 3)
    assert model.input.dtype == "uint8"
    assert model.output.shape == (None, 3)
    assert np.isfinite(_one_step(model, shape, 3))


def test_resnet50_has_the_published_size():
    # 23.5 million weights without the 1000-class ImageNet head: the layout matches the paper.
    model = build_model("resnet50", (32, 32, 3), 3)
    assert 23_500_000 < model.count_params() < 23_600_000


def test_bottleneck_projects_the_shortcut_only_when_the_shape_changes():
    def projections(specs):
        model = build_model(specs, (16, 16, 8), 2)
        return sum(1 for layer in model.layers if layer.name.startswith("conv2d")) - 3 * len(specs)

    assert projections([{"type": "res_131", "depths": [4, 4, 8]}]) == 0
    assert projections([{"type": "res_131", "depths": [4, 4, 16]}]) == 1
    assert projections([{"type": "res_131", "depths": [4, 4, 8], "stride": 2}]) == 1


def test_a_users_layer_list_builds_with_a_head_added_to_feature_maps():
    specs = [
        {"type": "conv", "filters": 4, "activation": "linear"},
        {"type": "bn"},
        {"type": "relu"},
        {"type": "avg_pool"},
        {"type": "res_131", "depths": [2, 2, 8]},
    ]
    model = build_model(specs, (8, 8, 3), 4)
    assert model.name == "custom"
    assert np.isfinite(_one_step(model, (8, 8, 3), 4))


def test_a_list_that_collapses_is_refused_before_keras_builds_it():
    with pytest.raises(LayerListError, match=r"layer 3 \(max_pool\): downsamples"):
        build_model([{"type": "max_pool"}] * 4, (4, 4, 1), 2)


def test_augmentation_layers_change_training_inputs_but_not_predictions():
    augmentation = [{"type": "flip", "mode": "both"}, {"type": "translation", "factor": 0.3}]
    specs = [{"type": "flatten"}]
    model = build_model(specs, (6, 6, 1), 2, augmentation)
    pixels = np.arange(36, dtype=np.uint8).reshape(1, 6, 6, 1).repeat(8, axis=0)
    inference = model(pixels, training=False).numpy()
    assert np.allclose(inference, inference[0])  # identical images, identical predictions
    training = model(pixels, training=True).numpy()
    assert not np.allclose(training, training[0])  # each copy was transformed differently


def test_mixed_precision_keeps_float32_probabilities():
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model("three_conv", (16, 16, 1), 3)
        assert model.layers[-2].compute_dtype == "float16"
        assert model.output.dtype == "float32"
        assert np.isfinite(_one_step(model, (16, 16, 1), 3))
    finally:
        keras.mixed_precision.set_global_policy(previous)

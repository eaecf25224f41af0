"""Keras models built from a layer list; the classic tutorial networks are presets.

A model is a list of layer specs such as ``{type: conv, filters: 32, kernel: 3}``. Inputs are
uint8 pixels; the first layer scales them to [0, 1], so whatever feeds the model (training,
evaluation, predict) hands it the very pixels ``prepare`` stored.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

PRESETS: dict[str, list[dict[str, Any]]] = {
    # Three conv layers of 16/32/64 filters, each followed by max pooling, then dense 1024.
    "three_conv": [
        {"type": "conv", "filters": 16, "kernel": 5},
        {"type": "max_pool", "size": 2},
        {"type": "conv", "filters": 32, "kernel": 4},
        {"type": "max_pool", "size": 2},
        {"type": "conv", "filters": 64, "kernel": 3},
        {"type": "max_pool", "size": 2},
        {"type": "flatten"},
        {"type": "dense", "units": 1024},
        {"type": "dropout", "rate": 0.3},
    ],
    # The CIFAR-10 tutorial network: conv 32-64-128 with pooling and dropout, dense 1024, 128.
    "cifar": [
        {"type": "conv", "filters": 32, "kernel": 3},
        {"type": "max_pool", "size": 2},
        {"type": "conv", "filters": 64, "kernel": 3},
        {"type": "max_pool", "size": 2},
        {"type": "conv", "filters": 128, "kernel": 3},
        {"type": "max_pool", "size": 2},
        {"type": "dropout", "rate": 0.3},
        {"type": "flatten"},
        {"type": "dense", "units": 1024},
        {"type": "dropout", "rate": 0.3},
        {"type": "dense", "units": 128},
    ],
    # VGG-like: two conv 32, pool, dropout, two conv 64, pool, dropout, dense 1024, dropout.
    "vgg_like": [
        {"type": "conv", "filters": 32, "kernel": 3},
        {"type": "conv", "filters": 32, "kernel": 3},
        {"type": "max_pool", "size": 2},
        {"type": "dropout", "rate": 0.25},
        {"type": "conv", "filters": 64, "kernel": 3},
        {"type": "conv", "filters": 64, "kernel": 3},
        {"type": "max_pool", "size": 2},
        {"type": "dropout", "rate": 0.25},
        {"type": "flatten"},
        {"type": "dense", "units": 1024},
        {"type": "dropout", "rate": 0.5},
    ],
}


class ModelConfigError(ValueError):
    """A layer list that cannot be built; the message names the layer and the fix."""


def _layer(spec: dict[str, Any]) -> keras.Layer:
    kind = spec.get("type")
    if kind == "conv":
        return layers.Conv2D(
            spec["filters"],
            spec.get("kernel", 3),
            strides=spec.get("stride", 1),
            padding="same",
            activation=spec.get("activation", "relu"),
        )
    if kind == "max_pool":
        return layers.MaxPooling2D(spec.get("size", 2), padding="same")
    if kind == "avg_pool":
        return layers.AveragePooling2D(spec.get("size", 2), padding="same")
    if kind == "bn":
        return layers.BatchNormalization()
    if kind == "relu":
        return layers.ReLU()
    if kind == "dropout":
        return layers.Dropout(spec.get("rate", 0.5))
    if kind == "flatten":
        return layers.Flatten()
    if kind == "global_avg_pool":
        return layers.GlobalAveragePooling2D()
    if kind == "dense":
        return layers.Dense(spec["units"], activation=spec.get("activation", "relu"))
    raise ModelConfigError(
        f"unknown layer type {kind!r}; valid: avg_pool, bn, conv, dense, dropout, flatten, "
        "global_avg_pool, max_pool, relu"
    )


def layer_list(model: str) -> list[dict[str, Any]]:
    if model not in PRESETS:
        raise ModelConfigError(
            f"train.model: unknown model {model!r}; presets: {', '.join(sorted(PRESETS))}"
        )
    return PRESETS[model]


def build_model(model: str, input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    inputs = keras.Input(shape=input_shape, dtype="uint8", name="pixels")
    x = layers.Rescaling(1.0 / 255)(inputs)
    for spec in layer_list(model):
        x = _layer(spec)(x)
    if len(x.shape) > 2:  # a list that ends on feature maps still needs a classifier head
        x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=model)

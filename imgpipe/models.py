"""Keras models built from a checked layer list (see ``imgpipe.layers``).

Inputs are uint8 pixels; the first layer scales them to [0, 1], so whatever feeds the model
(training, evaluation, predict) hands it the very pixels ``prepare`` stored. Optional
augmentation layers sit right after the scaling: Keras runs them in training only, so the
saved model predicts on untouched images.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from imgpipe.backbones import build_backbone
from imgpipe.layers import LayerListError, check_augmentation, output_shapes, resolve


def _activation(name: str) -> str | None:
    return None if name == "linear" else name


def _conv(spec: dict[str, Any]) -> keras.Layer:
    return layers.Conv2D(
        spec["filters"],
        spec["kernel"],
        strides=spec["stride"],
        padding=spec["padding"],
        activation=_activation(spec["activation"]),
    )


def _pool(spec: dict[str, Any]) -> keras.Layer:
    pool = layers.MaxPooling2D if spec["type"] == "max_pool" else layers.AveragePooling2D
    return pool(spec["size"], strides=spec["stride"] or spec["size"], padding=spec["padding"])


def _bottleneck(x, depths: list[int], stride: int):
    """1x1 -> 3x3 -> 1x1 with batch norm; the shortcut is projected when the shape changes."""
    a, b, c = depths
    shortcut = x
    if stride != 1 or x.shape[-1] != c:
        shortcut = layers.Conv2D(c, 1, strides=stride, use_bias=False)(x)
        shortcut = layers.BatchNormalization()(shortcut)
    y = layers.Conv2D(a, 1, strides=stride, use_bias=False)(x)
    y = layers.ReLU()(layers.BatchNormalization()(y))
    y = layers.Conv2D(b, 3, padding="same", use_bias=False)(y)
    y = layers.ReLU()(layers.BatchNormalization()(y))
    y = layers.Conv2D(c, 1, use_bias=False)(y)
    y = layers.BatchNormalization()(y)
    return layers.ReLU()(layers.Add()([y, shortcut]))


def _apply(spec: dict[str, Any], x):
    kind = spec["type"]
    if kind == "backbone":
        return build_backbone(spec, x)
    if kind == "res_131":
        return _bottleneck(x, spec["depths"], spec["stride"])
    if kind == "conv":
        return _conv(spec)(x)
    if kind in ("max_pool", "avg_pool"):
        return _pool(spec)(x)
    simple = {
        "bn": layers.BatchNormalization,
        "relu": layers.ReLU,
        "flatten": layers.Flatten,
        "global_avg_pool": layers.GlobalAveragePooling2D,
    }
    if kind in simple:
        return simple[kind]()(x)
    if kind == "dropout":
        return layers.Dropout(spec["rate"])(x)
    if kind == "dense":
        return layers.Dense(spec["units"], activation=_activation(spec["activation"]))(x)
    raise LayerListError(f"no builder for layer type {kind!r}")  # schema and builder disagree


def _augmentation_layer(spec: dict[str, Any]) -> keras.Layer:
    kind = spec["type"]
    if kind == "flip":
        mode = {"both": "horizontal_and_vertical"}.get(spec["mode"], spec["mode"])
        return layers.RandomFlip(mode)
    factor = spec.get("factor")
    if kind == "rotation":
        return layers.RandomRotation(factor, fill_mode="nearest")
    if kind == "zoom":
        return layers.RandomZoom(factor, fill_mode="nearest")
    if kind == "translation":
        return layers.RandomTranslation(factor, factor, fill_mode="nearest")
    if kind == "contrast":
        return layers.RandomContrast(factor, value_range=(0, 1))
    if kind == "brightness":
        return layers.RandomBrightness(factor, value_range=(0, 1))
    raise LayerListError(f"no builder for augmentation type {kind!r}")


def build_model(
    model: str | list[dict[str, Any]],
    input_shape: tuple[int, int, int],
    num_classes: int,
    augmentation: list[dict[str, Any]] | None = None,
    name: str | None = None,
) -> keras.Model:
    """A preset name or a layer list -> an uncompiled model ending in a softmax over classes.

    The list is checked against the input shape first, so a network too deep for the image
    size fails with a message naming the layer, before Keras builds anything.
    """
    specs = resolve(model)
    output_shapes(specs, input_shape)
    inputs = keras.Input(shape=input_shape, dtype="uint8", name="pixels")
    x = layers.Rescaling(1.0 / 255)(inputs)
    for spec in check_augmentation(augmentation or []):
        x = _augmentation_layer(spec)(x)
    for spec in specs:
        x = _apply(spec, x)
    if len(x.shape) > 2:  # a list that ends on feature maps still needs a classifier head
        x = layers.GlobalAveragePooling2D()(x)
    # float32 probabilities even under mixed precision: softmax in float16 loses small classes
    head = layers.Dense(num_classes, activation="softmax", name="probabilities", dtype="float32")
    default_name = model if isinstance(model, str) else "custom"
    return keras.Model(inputs, head(x), name=name or default_name)

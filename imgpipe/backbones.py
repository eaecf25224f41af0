"""Pretrained networks from ``keras.applications`` as one layer of a layer list.

``{type: backbone, name: MobileNetV2, weights: imagenet}`` puts the network (without its
ImageNet classifier, average-pooled to one feature vector) where the layer stands. The model
still takes the uint8 pixels ``prepare`` writes: the scaling each network was trained with
is folded into the model as a fixed per-pixel layer, and a grey image is given to the network
as three equal channels, so ``predict`` and every export stay unchanged.

This table is plain Python, so params are checked before TensorFlow is imported; building and
loading weights happen in ``build_backbone``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgpipe.errors import StageError

# How each family expects its input, from a float image in [0, 1]:
#   tf: x * 2 - 1;  torch: (x - ImageNet mean) / std;  caffe: BGR, 0-255, minus the mean;
#   raw: 0-255, the network scales it itself (its include_preprocessing layers).
TF, TORCH, CAFFE, RAW = "tf", "torch", "caffe", "raw"


@dataclass(frozen=True)
class Backbone:
    scaling: str
    features: int  # length of the pooled feature vector
    min_side: int = 32  # smallest input side keras.applications accepts


def _family(scaling: str, features: dict[str, int], min_side: int = 32) -> dict[str, Backbone]:
    return {name: Backbone(scaling, count, min_side) for name, count in features.items()}


BACKBONES: dict[str, Backbone] = {
    **_family(TF, {"MobileNet": 1024, "MobileNetV2": 1280}),
    **_family(TF, {"ResNet50V2": 2048, "ResNet101V2": 2048, "ResNet152V2": 2048}),
    **_family(TF, {"NASNetMobile": 1056, "NASNetLarge": 4032}),
    **_family(TF, {"Xception": 2048}, min_side=71),
    **_family(TF, {"InceptionV3": 2048, "InceptionResNetV2": 1536}, min_side=75),
    **_family(TORCH, {"DenseNet121": 1024, "DenseNet169": 1664, "DenseNet201": 1920}),
    **_family(CAFFE, {"ResNet50": 2048, "ResNet101": 2048, "ResNet152": 2048}),
    **_family(CAFFE, {"VGG16": 512, "VGG19": 512}),
    **_family(RAW, {"MobileNetV3Small": 576, "MobileNetV3Large": 960}),
    **_family(
        RAW,
        {
            f"EfficientNetB{i}": n
            for i, n in enumerate((1280, 1280, 1408, 1536, 1792, 2048, 2304, 2560))
        },
    ),
    **_family(RAW, {"EfficientNetV2B0": 1280, "EfficientNetV2B1": 1280}),
    **_family(RAW, {"EfficientNetV2B2": 1408, "EfficientNetV2B3": 1536}),
    **_family(RAW, {"EfficientNetV2S": 1280, "EfficientNetV2M": 1280, "EfficientNetV2L": 1280}),
    **_family(RAW, {"ConvNeXtTiny": 768, "ConvNeXtSmall": 768, "ConvNeXtBase": 1024}),
    **_family(RAW, {"ConvNeXtLarge": 1536, "ConvNeXtXLarge": 2048}),
}

NO_WEIGHTS, IMAGENET = "none", "imagenet"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def check_name(value: Any) -> str:
    if value not in BACKBONES:
        raise ValueError(
            f"must be a keras.applications network: {', '.join(sorted(BACKBONES))}; got {value!r}"
        )
    return value


def check_weights(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be none, imagenet or the path of a weights file, got {value!r}")
    return value


def input_problem(name: str, weights: str, height: int, width: int) -> str | None:
    """Why images of this size cannot go through the backbone, naming the prepare.size to use."""
    needed = BACKBONES[name].min_side
    if min(height, width) < needed:
        return (
            f"{name} takes images of at least {needed}x{needed}, and prepare makes "
            f"{width}x{height}; set prepare.size to at least [{needed}, {needed}]"
        )
    return None


def _scaling_matrix(scaling: str, channels: int) -> tuple[list[list[float]], list[float]]:
    """(W, b) of the fixed layer y = x W + b taking [0, 1] pixels to what the network expects.

    W has one row per input channel, so a grey image becomes three equal channels in the
    same step.
    """
    import numpy as np

    if scaling == TF:
        scale, bias = np.full(3, 2.0), np.full(3, -1.0)
    elif scaling == TORCH:
        scale = 1 / np.asarray(IMAGENET_STD)
        bias = -np.asarray(IMAGENET_MEAN) / np.asarray(IMAGENET_STD)
    elif scaling == CAFFE:
        scale, bias = np.full(3, 255.0), -np.asarray(CAFFE_MEAN_BGR)
    else:
        scale, bias = np.full(3, 255.0), np.zeros(3)
    matrix = np.diag(scale)
    if scaling == CAFFE:
        matrix = matrix[:, ::-1]  # output channel 0 is blue: RGB in, BGR out
    if channels == 1:
        matrix = np.full((1, 3), scale[0])  # one grey channel copied to all three
    return matrix.tolist(), bias.tolist()


def scaling_layer(name: str, channels: int):
    """The network's input scaling as a fixed Dense layer over the channel axis."""
    import keras

    matrix, bias = _scaling_matrix(BACKBONES[name].scaling, channels)
    return keras.layers.Dense(
        3,
        kernel_initializer=keras.initializers.Constant(matrix),
        bias_initializer=keras.initializers.Constant(bias),
        trainable=False,
        name=f"{name.lower()}_input_scaling",
    )


class WeightsError(StageError):
    """Backbone weights that cannot be had; the message says where to put them."""


def _cache_dir() -> Path:
    """Where Keras keeps downloaded weights: $KERAS_HOME/models, else ~/.keras/models."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def offline_message(name: str, error: Exception) -> str:
    found = re.search(r"URL fetch failure on (\S+?):? ", str(error) + " ")
    url = found.group(1) if found else "the ImageNet weights file"
    file_name = url.rsplit("/", 1)[-1] if found else f"{name.lower()}_notop.h5"
    reason = str(error).rsplit(" -- ", 1)[-1]
    return (
        f"backbone {name}: Keras could not download its ImageNet weights from {url} "
        f"({reason}). "
        f"Without a network, copy that file from a machine that has one to "
        f"{_cache_dir() / file_name} (Keras' cache, checked against its published hash), or "
        f"set weights: <path to a weights file> in the backbone layer, or weights: none to "
        "train it from scratch"
    )


def _pretrained(name: str, weights: str, input_shape: tuple[int, int, int]):
    import keras

    build = getattr(keras.applications, name)
    resolved = None if weights == NO_WEIGHTS else weights
    if resolved not in (None, IMAGENET) and not Path(resolved).is_file():
        raise WeightsError(
            f"backbone {name}: weights file {resolved!r} does not exist; give the path of a "
            "weights file saved from the same network without its classifier, or imagenet"
        )
    try:
        return build(include_top=False, weights=resolved, input_shape=input_shape, pooling="avg")
    except Exception as err:
        if resolved == IMAGENET and "URL fetch failure" in str(err):
            raise WeightsError(offline_message(name, err)) from None
        if isinstance(err, ValueError):  # wrong shapes in a weights file, a size it refuses
            raise WeightsError(f"backbone {name} with weights {weights!r}: {err}") from None
        raise


def build_backbone(spec: dict[str, Any], x):
    """The backbone applied to ``x`` (float pixels in [0, 1]): scaling, network, features."""
    name = spec["name"]
    height, width, channels = (int(n) for n in x.shape[1:])
    network = _pretrained(name, spec["weights"], (height, width, 3))
    # Pretrained: batch norm keeps the statistics it learnt, also once unfrozen (see
    # imgpipe/fine_tune.py); from scratch it learns them like any other layer.
    training = False if spec["weights"] != NO_WEIGHTS else None
    return network(scaling_layer(name, channels)(x), training=training)

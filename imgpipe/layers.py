"""Layer lists: the schema of every layer kind, the preset networks, and the shape check.

A model is written as a list of layer specs such as ``{type: conv, filters: 32, kernel: 3}``,
either one of the ``PRESETS`` named in ``train.model`` or the user's own list in params.yaml.
This module is plain Python, so params can be validated before TensorFlow is even imported,
and a list that cannot work (an unknown layer, a missing depth, a feature map shrunk to
nothing) is refused with a message naming the layer and the fix instead of a Keras traceback.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from imgpipe.backbones import BACKBONES, check_name, check_weights, input_problem

Spec = dict[str, Any]


class LayerListError(ValueError):
    """A layer list that cannot be built; the message names the layer and the fix."""


# --- argument checkers: each returns the value or raises ValueError saying what is allowed ---


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"must be a whole number of at least 1, got {value!r}")
    return value


def _rate(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"must be a number from 0 up to (not including) 1, got {value!r}")
    return float(value)


def _factor(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"must be a number above 0 and at most 1, got {value!r}")
    return float(value)


def _choice(*allowed: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}; got {value!r}")
        return value

    return check


def _depths(value: Any) -> list[int]:
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 3
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in value)
    ):
        raise ValueError(
            "must be three filter counts [a, b, c] for the 1x1, 3x3 and 1x1 convolutions, "
            f"e.g. [64, 64, 256]; got {value!r}"
        )
    return list(value)


_padding = _choice("same", "valid")
_activation = _choice("relu", "elu", "gelu", "selu", "swish", "tanh", "sigmoid", "linear")

REQUIRED, OPTIONAL = "required", "optional"

# kind -> argument -> (required or optional, checker, default, example shown in errors)
LAYER_KINDS: dict[str, dict[str, tuple[str, Callable[[Any], Any], Any]]] = {
    "conv": {
        "filters": (REQUIRED, _positive_int, 32),
        "kernel": (OPTIONAL, _positive_int, 3),
        "stride": (OPTIONAL, _positive_int, 1),
        "padding": (OPTIONAL, _padding, "same"),
        "activation": (OPTIONAL, _activation, "relu"),
    },
    "bn": {},
    "relu": {},
    "max_pool": {
        "size": (OPTIONAL, _positive_int, 2),
        "stride": (OPTIONAL, _positive_int, None),  # None: the pool size
        "padding": (OPTIONAL, _padding, "same"),
    },
    "avg_pool": {
        "size": (OPTIONAL, _positive_int, 2),
        "stride": (OPTIONAL, _positive_int, None),
        "padding": (OPTIONAL, _padding, "same"),
    },
    "dropout": {"rate": (OPTIONAL, _rate, 0.5)},
    "flatten": {},
    "global_avg_pool": {},
    "dense": {
        "units": (REQUIRED, _positive_int, 128),
        "activation": (OPTIONAL, _activation, "relu"),
    },
    # Residual bottleneck (He et al. 2016): 1x1 (a) -> 3x3 (b) -> 1x1 (c), plus the input,
    # projected by a strided 1x1 convolution when the shape changes.
    "res_131": {
        "depths": (REQUIRED, _depths, [64, 64, 256]),
        "stride": (OPTIONAL, _positive_int, 1),
    },
    # A keras.applications network, pooled to one feature vector (imgpipe/backbones.py).
    "backbone": {
        "name": (REQUIRED, check_name, "MobileNetV2"),
        "weights": (OPTIONAL, check_weights, "none"),  # none | imagenet | a weights file
    },
}

# On-the-fly augmentation, applied inside the model during training only (pixels in [0, 1]).
AUGMENTATION_KINDS: dict[str, dict[str, tuple[str, Callable[[Any], Any], Any]]] = {
    "flip": {"mode": (OPTIONAL, _choice("horizontal", "vertical", "both"), "horizontal")},
    "rotation": {"factor": (REQUIRED, _factor, 0.05)},  # fraction of a full turn
    "zoom": {"factor": (REQUIRED, _factor, 0.1)},
    "translation": {"factor": (REQUIRED, _factor, 0.1)},
    "contrast": {"factor": (REQUIRED, _factor, 0.2)},
    "brightness": {"factor": (REQUIRED, _factor, 0.2)},
}

SPATIAL_KINDS = {"conv", "max_pool", "avg_pool", "res_131", "flatten", "global_avg_pool"}


def _bottleneck_stage(depths: list[int], blocks: int, stride: int) -> list[Spec]:
    first = {"type": "res_131", "depths": depths, "stride": stride}
    return [first] + [{"type": "res_131", "depths": depths} for _ in range(blocks - 1)]


def _resnet(blocks_per_stage: tuple[int, int, int, int]) -> list[Spec]:
    """The ImageNet ResNet layout: 7x7/2 stem, 3x3/2 max pool, four bottleneck stages."""
    stem: list[Spec] = [
        {"type": "conv", "filters": 64, "kernel": 7, "stride": 2, "activation": "linear"},
        {"type": "bn"},
        {"type": "relu"},
        {"type": "max_pool", "size": 3, "stride": 2},
    ]
    widths = ([64, 64, 256], [128, 128, 512], [256, 256, 1024], [512, 512, 2048])
    stages: list[Spec] = []
    for index, (depths, blocks) in enumerate(zip(widths, blocks_per_stage, strict=True)):
        stages += _bottleneck_stage(depths, blocks, stride=1 if index == 0 else 2)
    return [*stem, *stages, {"type": "global_avg_pool"}]


PRESETS: dict[str, list[Spec]] = {
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
    "resnet50": _resnet((3, 4, 6, 3)),
    "resnet101": _resnet((3, 4, 23, 3)),
    # keras.applications networks, untrained; for ImageNet weights write the layer list with
    # {type: backbone, name: ..., weights: imagenet} (README: Transfer learning).
    **{
        preset: [{"type": "backbone", "name": name}, {"type": "dropout", "rate": 0.2}]
        for preset, name in {
            "mobilenet_v2": "MobileNetV2",
            "mobilenet_v3_small": "MobileNetV3Small",
            "mobilenet_v3_large": "MobileNetV3Large",
            "efficientnet_v2_b0": "EfficientNetV2B0",
            "resnet50_v2": "ResNet50V2",
            "convnext_tiny": "ConvNeXtTiny",
        }.items()
    },
}


def _describe(kinds: dict, kind: str) -> str:
    arguments = kinds[kind]
    if not arguments:
        return f"{kind} takes no arguments"
    parts = [
        f"{name} ({'required' if need == REQUIRED else 'optional'}, e.g. {example!r})"
        for name, (need, _, example) in arguments.items()
    ]
    return f"{kind} takes " + ", ".join(parts)


def _check_spec(spec: Any, position: int, kinds: dict, what: str) -> Spec:
    """One spec with its defaults filled in; errors say 'layer N (kind): problem; fix'."""
    if not isinstance(spec, dict):
        raise LayerListError(
            f"{what} {position} must be a mapping such as {{type: conv, filters: 32}}, got {spec!r}"
        )
    kind = spec.get("type")
    if kind is None:
        raise LayerListError(f"{what} {position} has no 'type'; types: {', '.join(kinds)}")
    if kind not in kinds:
        raise LayerListError(
            f"{what} {position}: unknown type {kind!r}; types: {', '.join(sorted(kinds))}"
        )
    arguments = kinds[kind]
    unknown = sorted(set(spec) - {"type"} - set(arguments))
    if unknown:
        raise LayerListError(
            f"{what} {position} ({kind}): unknown argument(s) {', '.join(unknown)}; "
            f"{_describe(kinds, kind)}"
        )
    checked: Spec = {"type": kind}
    for name, (need, check, example) in arguments.items():
        if name not in spec:
            if need == REQUIRED:
                raise LayerListError(
                    f"{what} {position} ({kind}): missing {name!r}, e.g. {name}: {example!r}; "
                    f"{_describe(kinds, kind)}"
                )
            checked[name] = example
            continue
        try:
            checked[name] = check(spec[name])
        except ValueError as err:
            raise LayerListError(f"{what} {position} ({kind}): {name} {err}") from None
    return checked


def check_layers(specs: Any) -> list[Spec]:
    """The layer list with defaults filled in, or LayerListError on the first bad layer."""
    if not isinstance(specs, (list, tuple)) or not specs:
        raise LayerListError("a layer list must be a non-empty list of layer specs")
    return [_check_spec(spec, i, LAYER_KINDS, "layer") for i, spec in enumerate(specs, 1)]


def check_augmentation(specs: Any) -> list[Spec]:
    if not isinstance(specs, (list, tuple)):
        raise LayerListError("augmentation must be a list such as [{type: zoom, factor: 0.1}]")
    return [
        _check_spec(spec, i, AUGMENTATION_KINDS, "augmentation") for i, spec in enumerate(specs, 1)
    ]


def resolve(model: str | list[Spec]) -> list[Spec]:
    """A preset's or the user's layer list, checked, with every default written out."""
    if isinstance(model, str):
        if model not in PRESETS:
            raise LayerListError(
                f"unknown preset {model!r}; presets: {', '.join(sorted(PRESETS))}, "
                "or write a layer list"
            )
        return check_layers(PRESETS[model])
    return check_layers(model)


def _spatial(size: int, window: int, stride: int, padding: str) -> int:
    if padding == "same":
        return math.ceil(size / stride)
    return (size - window) // stride + 1


def _strides_and_windows(spec: Spec) -> tuple[int, int, str]:
    kind = spec["type"]
    if kind == "conv":
        return spec["kernel"], spec["stride"], spec["padding"]
    if kind in ("max_pool", "avg_pool"):
        return spec["size"], spec["stride"] or spec["size"], spec["padding"]
    return 1, spec.get("stride", 1), "same"  # res_131


def output_shapes(specs: list[Spec], input_shape: tuple[int, int, int]) -> list[tuple[int, ...]]:
    """The shape after each layer of a checked list; refuses a list whose maps shrink to nothing.

    Downsampling a map that is already one pixel wide is refused too: Keras would run it, but
    it means the images are too small for the network, which the user should hear about.
    """
    shape: tuple[int, ...] = tuple(input_shape)
    shapes = []
    for position, spec in enumerate(specs, 1):
        kind = spec["type"]
        where = f"layer {position} ({kind})"
        if kind in SPATIAL_KINDS and len(shape) != 3:
            raise LayerListError(
                f"{where} needs feature maps, but an earlier flatten or dense layer already "
                "turned them into a vector; move it after the convolutions"
            )
        if kind == "backbone":
            if position != 1:
                raise LayerListError(
                    f"{where} must be the first layer: it takes the image itself, scaled as "
                    f"{spec['name']} was trained"
                )
            problem = input_problem(spec["name"], spec["weights"], shape[0], shape[1])
            if problem:
                raise LayerListError(f"{where}: {problem}")
            shape = (BACKBONES[spec["name"]].features,)
            shapes.append(shape)
            continue
        if kind == "dense" and len(shape) != 1:
            raise LayerListError(
                f"{where} needs a vector: put a flatten or global_avg_pool layer before it"
            )
        if kind in ("conv", "max_pool", "avg_pool", "res_131"):
            window, stride, padding = _strides_and_windows(spec)
            height, width, channels = shape
            new = tuple(_spatial(n, window, stride, padding) for n in (height, width))
            if min(new) < 1:
                raise LayerListError(
                    f"{where}: a {window}x{window} window with padding 'valid' does not fit "
                    f"the {height}x{width} feature map; its output would have no pixels. Use "
                    "padding 'same', a smaller window, fewer downsampling layers before it, "
                    "or a larger prepare.size"
                )
            if stride > 1 and min(height, width) == 1:
                raise LayerListError(
                    f"{where}: downsamples (stride {stride}) a feature map of {height}x{width} "
                    "that has nothing left to shrink; the images are too small for this layer "
                    "list. Use a larger prepare.size or fewer downsampling layers"
                )
            if kind == "conv":
                channels = spec["filters"]
            elif kind == "res_131":
                channels = spec["depths"][2]
            shape = (*new, channels)
        elif kind == "flatten":
            shape = (math.prod(shape),)
        elif kind == "global_avg_pool":
            shape = (shape[2],)
        elif kind == "dense":
            shape = (spec["units"],)
        shapes.append(shape)
    return shapes

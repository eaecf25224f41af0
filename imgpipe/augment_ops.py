"""Augmentor operations by the names ``params.augment`` uses, applied reproducibly.

Augmentor's ``Pipeline.sample()`` draws from the process-wide ``random`` and ``numpy.random``
generators in shared threads and names files with uuid4, so its output differs on every run.
Here each output sample seeds those generators from (seed, sample index) in whichever worker
process makes it, and the operation objects are applied directly: the same params always
give the same bytes, for any number of workers.
"""

from __future__ import annotations

import inspect
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from Augmentor import Operations as ops
from PIL import Image

from imgpipe.cli import StageError
from imgpipe.params import AugmentOperation


class AugmentConfigError(StageError):
    """An operation in params.augment is unknown or has arguments it does not take."""


@dataclass(frozen=True)
class OperationSpec:
    cls: type
    defaults: dict[str, Any] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)  # set by the name, not by the user

    def parameters(self) -> list[str]:
        names = list(inspect.signature(self.cls.__init__).parameters)[1:]
        return [n for n in names if n not in ("probability", *self.fixed)]


# Names and defaults follow Augmentor's own Pipeline methods, so its documentation applies.
OPERATIONS: dict[str, OperationSpec] = {
    "rotate": OperationSpec(ops.RotateRange),
    "rotate90": OperationSpec(ops.Rotate, fixed={"rotation": 90}),
    "rotate180": OperationSpec(ops.Rotate, fixed={"rotation": 180}),
    "rotate270": OperationSpec(ops.Rotate, fixed={"rotation": 270}),
    "rotate_random_90": OperationSpec(ops.Rotate, fixed={"rotation": -1}),
    "flip_left_right": OperationSpec(ops.Flip, fixed={"top_bottom_left_right": "LEFT_RIGHT"}),
    "flip_top_bottom": OperationSpec(ops.Flip, fixed={"top_bottom_left_right": "TOP_BOTTOM"}),
    "flip_random": OperationSpec(ops.Flip, fixed={"top_bottom_left_right": "RANDOM"}),
    "zoom": OperationSpec(ops.Zoom),
    "zoom_random": OperationSpec(ops.ZoomRandom, defaults={"randomise": False}),
    "shear": OperationSpec(ops.Shear),
    "skew": OperationSpec(ops.Skew, defaults={"skew_type": "RANDOM", "magnitude": 1}),
    "skew_tilt": OperationSpec(ops.Skew, defaults={"magnitude": 1}, fixed={"skew_type": "TILT"}),
    "skew_corner": OperationSpec(
        ops.Skew, defaults={"magnitude": 1}, fixed={"skew_type": "CORNER"}
    ),
    "random_distortion": OperationSpec(ops.Distort),
    "gaussian_distortion": OperationSpec(
        ops.GaussianDistortion,
        defaults={
            "corner": "bell",
            "method": "in",
            "mex": 0.5,
            "mey": 0.5,
            "sdx": 0.05,
            "sdy": 0.05,
        },
    ),
    "crop_random": OperationSpec(
        ops.CropPercentage, defaults={"randomise_percentage_area": False}, fixed={"centre": False}
    ),
    "crop_centre": OperationSpec(
        ops.CropPercentage, defaults={"randomise_percentage_area": False}, fixed={"centre": True}
    ),
    "random_brightness": OperationSpec(ops.RandomBrightness),
    "random_contrast": OperationSpec(ops.RandomContrast),
    "random_color": OperationSpec(ops.RandomColor),
    "random_erasing": OperationSpec(ops.RandomErasing),
    "greyscale": OperationSpec(ops.Greyscale),
    "black_and_white": OperationSpec(ops.BlackAndWhite, defaults={"threshold": 128}),
    "histogram_equalisation": OperationSpec(ops.HistogramEqualisation),
    "invert": OperationSpec(ops.Invert),
}


@dataclass(frozen=True)
class BuiltOperation:
    name: str
    probability: float
    operation: Any  # an Augmentor Operation, whose own probability we do not use


def build_operation(config: AugmentOperation) -> BuiltOperation:
    spec = OPERATIONS.get(config.name)
    if spec is None:
        raise AugmentConfigError(
            f"augment.operations: unknown operation {config.name!r}; valid operations: "
            + ", ".join(sorted(OPERATIONS))
        )
    allowed = spec.parameters()
    unknown = sorted(set(config.arguments) - set(allowed))
    if unknown:
        raise AugmentConfigError(
            f"augment.operations: {config.name} does not take {', '.join(unknown)}; "
            f"it takes probability, {', '.join(allowed)}"
        )
    arguments = {**spec.defaults, **config.arguments}
    missing = [name for name in allowed if name not in arguments]
    if missing:
        raise AugmentConfigError(f"augment.operations: {config.name} needs {', '.join(missing)}")
    try:
        operation = spec.cls(probability=1.0, **spec.fixed, **arguments)
    except (TypeError, ValueError) as err:
        raise AugmentConfigError(f"augment.operations: {config.name}: {err}") from None
    return BuiltOperation(config.name, config.probability, operation)


def build_operations(configs: list[AugmentOperation]) -> list[BuiltOperation]:
    return [build_operation(config) for config in configs]


def sample_seed(seed: int, index: int) -> int:
    """A 32-bit seed unique to one output sample, independent of who computes it."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def augment_image(
    image: Image.Image, operations: list[BuiltOperation], seed: int, index: int
) -> tuple[Image.Image, list[str]]:
    """Apply each operation with its probability; return the image and the names applied.

    The result keeps the input's size and mode, so every augmented sample fits the shards.
    """
    own_seed = sample_seed(seed, index)
    draws = random.Random(own_seed)
    # Augmentor's operations draw from the global generators; seed them for this sample.
    random.seed(own_seed)
    np.random.seed(own_seed)
    applied = []
    result = image
    for built in operations:
        if draws.random() < built.probability:
            result = built.operation.perform_operation([result])[0]
            applied.append(built.name)
    if result.mode != image.mode:
        result = result.convert(image.mode)
    if result.size != image.size:
        result = result.resize(image.size, Image.Resampling.LANCZOS)
    return result, applied

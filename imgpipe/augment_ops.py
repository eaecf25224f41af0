"""Augmentor operations by the names ``params.augment`` uses, applied reproducibly.

Every operation Augmentor's ``Pipeline`` offers is available under the name of its
``Pipeline`` method (``rotate``, ``flip_left_right``, ``random_distortion``, ...), with that
method's arguments, defaults and argument checks: an operation is built by calling the method
on an empty ``Pipeline`` and taking the operation object it adds.

Augmentor's ``Pipeline.sample()`` draws from the process-wide ``random`` and ``numpy.random``
generators in shared threads and names files with uuid4, so its output differs on every run.
Here each output sample seeds those generators from (seed, sample index) in whichever worker
process makes it, and the operation objects are applied directly: the same params always
give the same bytes, for any number of workers.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import random
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
from Augmentor import Pipeline
from PIL import Image

from imgpipe.errors import StageError
from imgpipe.params import AugmentOperation, OperationChange


class AugmentConfigError(StageError):
    """An operation in params.augment is unknown, or has arguments it does not take."""


@cache
def operation_signatures() -> dict[str, inspect.Signature]:
    """Each operation name with the signature of the Pipeline method that adds it.

    Found rather than listed, so every operation of the installed Augmentor is offered: the
    methods that add an operation are exactly those taking a probability first.
    """
    found = {}
    for name, method in inspect.getmembers(Pipeline, inspect.isfunction):
        parameters = list(inspect.signature(method).parameters)
        if parameters[:2] == ["self", "probability"]:
            found[name] = inspect.signature(method)
    return dict(sorted(found.items()))


def operation_names() -> list[str]:
    return list(operation_signatures())


def operation_arguments(name: str) -> tuple[list[str], list[str]]:
    """(required, optional) argument names of an operation, probability excluded."""
    parameters = list(operation_signatures()[name].parameters.values())[2:]
    required = [p.name for p in parameters if p.default is inspect.Parameter.empty]
    optional = [p.name for p in parameters if p.default is not inspect.Parameter.empty]
    return required, optional


@dataclass(frozen=True)
class BuiltOperation:
    name: str
    probability: float
    arguments: tuple[tuple[str, Any], ...]
    operation: Any  # an Augmentor Operation; its own probability is 1, ours decides


def _describe_arguments(name: str) -> str:
    required, optional = operation_arguments(name)
    parts = ["probability", *required, *(f"{n} (optional)" for n in optional)]
    return ", ".join(parts)


def build_operation(config: AugmentOperation, where: str = "augment.operations") -> BuiltOperation:
    """The Augmentor operation ``config`` names, with its arguments checked by Augmentor."""
    signatures = operation_signatures()
    if config.name not in signatures:
        raise AugmentConfigError(
            f"{where}: unknown operation {config.name!r}; valid operations: "
            + ", ".join(signatures)
        )
    required, optional = operation_arguments(config.name)
    unknown = sorted(set(config.arguments) - set(required) - set(optional))
    if unknown:
        raise AugmentConfigError(
            f"{where}: {config.name} does not take {', '.join(unknown)}; "
            f"it takes {_describe_arguments(config.name)}"
        )
    missing = [name for name in required if name not in config.arguments]
    if missing:
        raise AugmentConfigError(
            f"{where}: {config.name} needs {', '.join(missing)}; "
            f"it takes {_describe_arguments(config.name)}"
        )
    pipeline = Pipeline()
    try:
        getattr(pipeline, config.name)(probability=1.0, **config.arguments)
    except (TypeError, ValueError) as err:
        raise AugmentConfigError(f"{where}: {config.name}: {err}") from None
    (operation,) = pipeline.operations
    return BuiltOperation(
        config.name, config.probability, tuple(sorted(config.arguments.items())), operation
    )


def build_operations(configs: list[AugmentOperation]) -> list[BuiltOperation]:
    return [build_operation(config) for config in configs]


def build_class_operations(
    configs: list[AugmentOperation],
    overrides: Mapping[str, Mapping[str, OperationChange | None]],
    classes: list[str],
) -> dict[str, list[BuiltOperation]]:
    """The operation list of each class: the shared list, with that class's overrides applied.

    An override either drops an operation for the class (``None``, written ``false`` in
    params.yaml) or changes its probability and/or some of its arguments, keeping the others.
    """
    unknown_classes = sorted(set(overrides) - set(classes))
    if unknown_classes:
        raise AugmentConfigError(
            f"augment.class_overrides: no class named {', '.join(map(repr, unknown_classes))} "
            f"in the training split; classes: {', '.join(classes)}"
        )
    shared = _checked_shared(configs, overrides)
    return {label: _own_list(configs, shared, overrides.get(label, {}), label) for label in classes}


def check_operations(
    configs: list[AugmentOperation], overrides: Mapping[str, Mapping[str, OperationChange | None]]
) -> None:
    """Build every operation and every class's overridden list, or raise AugmentConfigError.

    What ``build_class_operations`` checks, except the class names, which only the training
    split knows: so a wrong name or argument is found before any stage has spent its time.
    """
    shared = _checked_shared(configs, overrides)
    for label, changes in sorted(overrides.items()):
        _own_list(configs, shared, changes, label)


def _checked_shared(
    configs: list[AugmentOperation], overrides: Mapping[str, Mapping[str, OperationChange | None]]
) -> list[BuiltOperation]:
    listed = [config.name for config in configs]
    for label, changes in sorted(overrides.items()):
        strays = sorted(set(changes) - set(listed))
        if strays:
            raise AugmentConfigError(
                f"augment.class_overrides.{label}: {', '.join(strays)} is not in "
                f"augment.operations ({', '.join(listed) or 'empty'}); an override can only "
                "drop or change a listed operation (list it with probability 0 to use it for "
                "some classes only)"
            )
    return build_operations(configs)


def _own_list(
    configs: list[AugmentOperation],
    shared: list[BuiltOperation],
    changes: Mapping[str, OperationChange | None],
    label: str,
) -> list[BuiltOperation]:
    own = []
    for config, built in zip(configs, shared, strict=True):
        if config.name not in changes:
            own.append(built)
            continue
        change = changes[config.name]
        if change is not None:
            merged = AugmentOperation(
                name=config.name,
                probability=config.probability
                if change.probability is None
                else change.probability,
                **{**config.arguments, **change.arguments},
            )
            own.append(build_operation(merged, f"augment.class_overrides.{label}"))
    return own


def sample_seed(seed: int, index: int) -> int:
    """A 32-bit seed unique to one output sample, independent of who computes it."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


@contextlib.contextmanager
def preserved_globals() -> Iterator[None]:
    """Restore ``random`` and ``numpy.random`` (which Augmentor draws from) afterwards."""
    saved = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])


@dataclass(frozen=True)
class Applied:
    """One operation applied to a sample, with the draw that fell below its probability."""

    name: str
    probability: float
    draw: float

    def to_dict(self) -> dict[str, object]:
        # Six decimals, rounded down so that the recorded draw still shows it was below.
        draw = math.floor(self.draw * 1e6) / 1e6
        return {"name": self.name, "probability": self.probability, "draw": draw}


def _augment_seeded(
    image: Image.Image, operations: list[BuiltOperation], own_seed: int
) -> tuple[Image.Image, int, list[Applied]]:
    # Our own generator decides which operations run, so that decision does not depend on
    # how many numbers an operation happens to draw from the global generators.
    draws = random.Random(own_seed)
    random.seed(own_seed)
    np.random.seed(own_seed)
    applied = []
    # A copy, because some operations (random_erasing) paint into the image they are given.
    result = image.copy()
    for built in operations:
        draw = draws.random()
        if draw < built.probability:
            result = built.operation.perform_operation([result])[0]
            applied.append(Applied(built.name, built.probability, draw))
    if result.mode != image.mode:
        result = result.convert(image.mode)
    if result.size != image.size:
        result = result.resize(image.size, Image.Resampling.LANCZOS)
    return result, own_seed, applied


def augment_copies(
    image: Image.Image, operations: list[BuiltOperation], seed: int, indices: Iterable[int]
) -> list[tuple[Image.Image, int, list[Applied]]]:
    """Samples ``indices`` made from one image, each as (image, its own seed, what applied).

    Each sample's seed derives from (seed, index) alone, so it does not matter which process
    makes it or what it made before. Each result keeps the input's size and mode, so every
    augmented sample fits the shards. The caller's global random state is left as it was.
    """
    with preserved_globals():
        return [_augment_seeded(image, operations, sample_seed(seed, i)) for i in indices]


def augment_image(
    image: Image.Image, operations: list[BuiltOperation], seed: int, index: int
) -> tuple[Image.Image, list[Applied]]:
    """Apply each operation with its probability; return the image and what was applied."""
    result, _, applied = augment_copies(image, operations, seed, [index])[0]
    return result, applied

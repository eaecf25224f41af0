"""Starting a model from another run's ``model.keras``: the layers that match keep their weights.

Layers are paired in the order they hold weights, which is the order of the layer list both
models were built from; a pair is copied when the two layers are of one kind and every weight
has the same shape. The rest (the classifier when the class list differs, any layer the new
list changed) start from their fresh initial values and are reported. The source file's
sha256 goes into the training's settings, so a changed file is a different experiment.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from imgpipe.errors import StageError
from imgpipe.file_hash import file_sha256
from imgpipe.layout import local_path

log = logging.getLogger("imgpipe.train")


@dataclass(frozen=True)
class WarmStart:
    path: str
    sha256: str
    copied: list[str] = field(default_factory=list)  # layer names in the new model
    fresh: list[str] = field(default_factory=list)

    def record(self) -> dict:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "copied": self.copied,
            "fresh": self.fresh,
        }


def source_file(written: str) -> Path:
    path = local_path(written)
    if not path.is_file():
        raise StageError(
            f"train.warm_start {written!r} is not a file: give the model.keras of an earlier "
            "run (data/model/model.keras of another experiment, or `dvc get` it from one)"
        )
    return path


def file_digest(written: str) -> str:
    return file_sha256(source_file(written))


def _weighted(model) -> list:
    return [layer for layer in model.layers if layer.weights]


def _matches(new, old) -> bool:
    if type(new) is not type(old) or len(new.weights) != len(old.weights):
        return False
    return all(
        tuple(a.shape) == tuple(b.shape) for a, b in zip(new.weights, old.weights, strict=True)
    )


def warm_start(model, written: str) -> WarmStart:
    """Copy the matching layers of the model at ``written`` into ``model``, in place."""
    import keras

    path = source_file(written)
    try:
        source = keras.models.load_model(path, compile=False)
    except Exception as err:  # any reason the file is not a model Keras can read
        raise StageError(
            f"train.warm_start {written!r} cannot be read as a Keras model: {err}"
        ) from None
    copied, fresh = [], []
    old_layers = _weighted(source)
    for position, layer in enumerate(_weighted(model)):
        old = old_layers[position] if position < len(old_layers) else None
        if old is not None and _matches(layer, old):
            layer.set_weights(old.get_weights())
            copied.append(layer.name)
        else:
            fresh.append(layer.name)
    if not copied:
        raise StageError(
            f"train.warm_start {written!r}: no layer matches this model's; it was built from "
            "another layer list. Use the same train.model as the run that made it"
        )
    log.info(
        "warm start from %s: %d layer(s) copied, %d fresh (%s)",
        written,
        len(copied),
        len(fresh),
        ", ".join(fresh) or "none",
    )
    return WarmStart(str(written), file_sha256(path), copied, fresh)

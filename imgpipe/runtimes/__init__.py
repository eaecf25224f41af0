"""A trained model in any format the pipeline writes, behind one interface.

``describe(path)`` finds the format of a model file or folder and reads its class names and
image standard without loading any framework; ``.load()`` then gives a ``Model`` whose
``probabilities(pixels)`` takes the uint8 pixels ``prepare`` stores, whatever the format.
``predict``, ``serve`` and the ``export`` stage's check all go through here.

One module per format, each defining ``RUNTIME``; ``RUNTIMES`` tries them in order. A new
format is one module plus its entry below.
"""

from __future__ import annotations

from pathlib import Path

from imgpipe.errors import StageError
from imgpipe.runtimes import keras, onnx, saved_model, tflite
from imgpipe.runtimes.common import Model, ModelInfo, Runtime

RUNTIMES: tuple[Runtime, ...] = (keras.RUNTIME, saved_model.RUNTIME, onnx.RUNTIME, tflite.RUNTIME)

__all__ = ["RUNTIMES", "Model", "ModelInfo", "Runtime", "describe", "load"]


def runtime_for(path: Path) -> Runtime:
    for runtime in RUNTIMES:
        if runtime.recognises(path):
            return runtime
    if path.is_dir() or not path.suffix:
        return keras.RUNTIME  # the folder train writes, or will: it says which file is missing
    if not path.exists():
        raise StageError(f"{path}: no such model file or folder")
    known = "; ".join(f"{r.name}: {r.holds}" for r in RUNTIMES)
    raise StageError(f"{path} is no model of a known format ({known})")


def describe(path: Path | str) -> ModelInfo:
    """The model at ``path``, its format, classes and image standard; nothing is loaded."""
    path = Path(path)
    runtime = runtime_for(path)
    classes, standard = runtime.describe(path)
    return ModelInfo(path, runtime, classes, standard)


def load(path: Path | str) -> Model:
    return describe(path).load()

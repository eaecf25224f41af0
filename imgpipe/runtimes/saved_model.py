"""A TensorFlow SavedModel: its folder, or a TensorFlow Serving base path of version folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from imgpipe.images import Standard
from imgpipe.quiet_tf import import_tensorflow
from imgpipe.runtimes.common import Runtime, Scorer, describe_export

GRAPH_FILE = "saved_model.pb"
SIGNATURE = "serving_default"


def _versions(path: Path) -> list[Path]:
    """Numbered version folders holding a SavedModel, lowest first (TF Serving's layout)."""
    if not path.is_dir():
        return []
    numbered = [p for p in path.iterdir() if p.name.isdigit() and (p / GRAPH_FILE).is_file()]
    return sorted(numbered, key=lambda p: int(p.name))


def model_folder(path: Path) -> Path:
    """The SavedModel itself: ``path``, or its highest version, as TF Serving would serve."""
    if (path / GRAPH_FILE).is_file():
        return path
    versions = _versions(path)
    return versions[-1] if versions else path


def recognises(path: Path) -> bool:
    return path.is_dir() and (model_folder(path) / GRAPH_FILE).is_file()


def describe(path: Path) -> tuple[list[str], Standard]:
    return describe_export(model_folder(path))


class _Signature:
    """The serving signature; holds the loaded object, which the signature only refers to."""

    def __init__(self, folder: Path) -> None:
        self.tf = import_tensorflow()
        self.loaded = self.tf.saved_model.load(str(folder))
        self.function = self.loaded.signatures[SIGNATURE]
        _, keywords = self.function.structured_input_signature
        (self.input_name,) = keywords

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        outputs = self.function(**{self.input_name: self.tf.constant(pixels)})
        return next(iter(outputs.values())).numpy()


def open_model(path: Path) -> Scorer:
    return _Signature(model_folder(path))


RUNTIME = Runtime(
    name="saved_model",
    holds=f"a folder with {GRAPH_FILE}, or one of numbered version folders holding it",
    recognises=recognises,
    describe=describe,
    open=open_model,
)

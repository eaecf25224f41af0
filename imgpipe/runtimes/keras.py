"""The Keras model that ``train`` writes: ``data/model/`` or its ``model.keras``."""

from __future__ import annotations

import json
from pathlib import Path

from imgpipe.images import Standard
from imgpipe.runtimes.common import Runtime, Scorer
from imgpipe.trained import CLASSES_FILE, MODEL_FILE, load_trained, read_standard


def _model_dir(path: Path) -> Path:
    return path if path.is_dir() else path.parent


def recognises(path: Path) -> bool:
    if path.is_dir():
        return (path / MODEL_FILE).is_file()
    return path.suffix == ".keras" and path.is_file()


def describe(path: Path) -> tuple[list[str], Standard]:
    folder = _model_dir(path)
    standard = read_standard(folder)  # checks that every file train writes is there
    classes = json.loads((folder / CLASSES_FILE).read_text(encoding="utf-8"))
    return [str(name) for name in classes], standard


def open_model(path: Path) -> Scorer:
    trained = load_trained(_model_dir(path))
    return trained.model.predict_on_batch


RUNTIME = Runtime(
    name="keras",
    holds=f"the folder train writes, or its {MODEL_FILE}",
    recognises=recognises,
    describe=describe,
    open=open_model,
)

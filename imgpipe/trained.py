"""The trained model as its readers (evaluate, predict) see it: load it, rank its outputs.

``train`` writes ``data/model/`` with the Keras model (uint8 HxWxC pixels in, class
probabilities out), the class names in output order, and the image standard it was trained
on; the file names below are that contract.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imgpipe.errors import StageError
from imgpipe.images import Standard
from imgpipe.quiet_tf import import_tensorflow

MODEL_FILE = "model.keras"
CLASSES_FILE = "classes.json"
STANDARD_FILE = "preprocessing.json"


@dataclass(frozen=True)
class Trained:
    model: Any  # keras.Model; typed loosely so importing this module does not load TensorFlow
    classes: list[str]
    standard: Standard

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities (float64, rows sum to 1) for a batch of uint8 HxWxC images."""
        scores = np.asarray(self.model.predict_on_batch(pixels), dtype=np.float64)
        # float32 softmax rows miss 1 by rounding; scikit-learn's log loss insists on 1.
        return scores / scores.sum(axis=1, keepdims=True)


def _check_files(model_dir: Path) -> None:
    for name in (MODEL_FILE, CLASSES_FILE, STANDARD_FILE):
        if not (model_dir / name).is_file():
            raise StageError(
                f"{model_dir / name} is missing: train a model first (dvc repro train), "
                "or point --model-dir at a folder that train wrote"
            )


def read_standard(model_dir: Path) -> Standard:
    """The image standard the model was trained on, without loading TensorFlow."""
    model_dir = Path(model_dir)
    _check_files(model_dir)
    return Standard.from_dict(json.loads((model_dir / STANDARD_FILE).read_text(encoding="utf-8")))


def load_trained(model_dir: Path) -> Trained:
    model_dir = Path(model_dir)
    standard = read_standard(model_dir)
    import_tensorflow()  # imported here, and quietly: TensorFlow takes seconds to load
    import keras

    classes = json.loads((model_dir / CLASSES_FILE).read_text(encoding="utf-8"))
    model = keras.models.load_model(model_dir / MODEL_FILE)
    outputs = model.output_shape[-1]
    if outputs != len(classes):
        raise StageError(
            f"{model_dir}: the model has {outputs} outputs but {CLASSES_FILE} names "
            f"{len(classes)} classes; retrain (dvc repro train)"
        )
    return Trained(model, [str(name) for name in classes], standard)


def top_k(probabilities: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and probabilities of the ``k`` likeliest classes per row, likeliest first.

    A stable sort on the negated scores breaks ties by class order, so equal inputs always
    give the same ranking.
    """
    k = min(k, probabilities.shape[1])
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(probabilities, order, axis=1)

"""What every runtime shares: how a model is described, loaded and asked for probabilities.

A ``Runtime`` knows one format: which paths hold it, how to read its class names and image
standard without loading any framework (``predict`` forks its decoding workers first), and
how to load it into a function from a batch of uint8 HxWxC pixels to the model's raw scores.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgpipe.errors import StageError
from imgpipe.export_formats import METADATA_FILE
from imgpipe.images import Standard

# Raw scores for a batch of pixels: what a runtime's loaded model is.
Scorer = Callable[[np.ndarray], np.ndarray]

# How far above a model file or folder its model.json may be: a SavedModel version folder
# (export/saved_model/1) is two levels below the export's folder.
METADATA_LEVELS = 3


@dataclass(frozen=True)
class Runtime:
    name: str  # the format, as ``predict --model`` help, logs and ``GET /model`` name it
    holds: str  # what a path of this format looks like, for messages
    recognises: Callable[[Path], bool]
    # (class names, image standard) without importing the format's framework
    describe: Callable[[Path], tuple[list[str], Standard]]
    open: Callable[[Path], Scorer]


@dataclass(frozen=True)
class ModelInfo:
    """A model found on disk, not loaded yet."""

    path: Path
    runtime: Runtime
    classes: list[str]
    standard: Standard

    @property
    def format(self) -> str:
        return self.runtime.name

    def load(self) -> Model:
        try:
            scorer = self.runtime.open(self.path)
        except StageError:
            raise
        except Exception as err:  # each framework fails on a damaged file in its own way
            raise StageError(
                f"{self.path}: cannot load this {self.format} model ({type(err).__name__}: "
                f"{str(err).strip()[:500]}); export it again (dvc repro export)"
            ) from None
        return Model(self, scorer)


@dataclass(frozen=True)
class Model:
    """A loaded model of any format: uint8 pixels in, class probabilities out."""

    info: ModelInfo
    scores: Scorer

    @property
    def classes(self) -> list[str]:
        return self.info.classes

    @property
    def standard(self) -> Standard:
        return self.info.standard

    @property
    def format(self) -> str:
        return self.info.format

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities (float64, rows sum to 1) for a batch of uint8 HxWxC images."""
        scores = np.asarray(self.scores(np.ascontiguousarray(pixels, dtype=np.uint8)))
        if scores.shape != (len(pixels), len(self.classes)):
            raise StageError(
                f"{self.info.path}: the {self.format} model gave scores of shape "
                f"{scores.shape} for {len(pixels)} image(s) of {len(self.classes)} classes; "
                "its class list does not belong to it: export it again (dvc repro export)"
            )
        scores = scores.astype(np.float64)
        # float32 softmax rows miss 1 by rounding; scikit-learn's log loss insists on 1.
        return scores / scores.sum(axis=1, keepdims=True)


def metadata_path(path: Path) -> Path | None:
    """The export's model.json for a model file or folder: beside it or a few levels up."""
    folder = path if path.is_dir() else path.parent
    for candidate in [folder, *folder.parents][:METADATA_LEVELS]:
        if (candidate / METADATA_FILE).is_file():
            return candidate / METADATA_FILE
    return None


def describe_export(path: Path) -> tuple[list[str], Standard]:
    """Class names and image standard from the model.json that ``export`` writes."""
    found = metadata_path(path)
    if found is None:
        raise StageError(
            f"{path}: no {METADATA_FILE} beside it or above it; export writes one beside the "
            f"models (the class names and image standard), copy it along with the model"
        )
    try:
        metadata = json.loads(found.read_text(encoding="utf-8"))
        return [str(name) for name in metadata["classes"]], Standard.from_dict(metadata["standard"])
    except (ValueError, KeyError, TypeError) as err:
        raise StageError(f"{found}: not a model description export wrote ({err})") from None

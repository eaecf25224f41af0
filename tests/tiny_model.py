"""Tiny projects for the TensorFlow tests: learnable data, a trained model, a constant model.

The data is the learnable stripes of ``tests.conftest``. ``trained_project`` runs the real
prepare, split, augment and train stages (a few seconds on two cores); the test session
builds it once, as the ``trained_project`` fixture, and every test that only reads a model
shares it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imgpipe.layout import Layout
from imgpipe.params import AugmentParams, PrepareParams, SplitParams, TrainParams
from stages import augment, prepare, split, train
from tests.conftest import write_class_folders

CLASSES = ["circle", "square", "triangle"]
PREPARE = PrepareParams(size=(16, 16), color="rgb", workers=1)
# What the shared model is trained with: enough epochs that the stripes are learnt for sure.
TRAIN = TrainParams(epochs=8, batch_size=16, lr=0.003)
SEED = 5


@dataclass(frozen=True)
class Project:
    root: Path  # the project folder: every path of the contract lies below it
    trained: dict = field(default_factory=dict)  # train.run's summary, once it was trained

    @property
    def layout(self) -> Layout:
        return Layout.under(self.root)

    @property
    def raw(self) -> Path:
        return self.layout.raw

    @property
    def prepared(self) -> Path:
        return self.layout.prepared

    @property
    def split(self) -> Path:
        return self.layout.split

    @property
    def model(self) -> Path:
        return self.layout.model


def prepared_project(root: Path, classes: list[str], per_class: int = 20) -> Project:
    project = Project(root)
    write_class_folders(project.raw, classes, per_class=per_class)
    prepare.run(PREPARE, project.layout)
    split.run(SplitParams(val=0.2, test=0.2), 7, project.layout)
    return project


def trained_project(root: Path, classes: list[str] = CLASSES) -> Project:
    project = prepared_project(root, classes)
    augment.run(AugmentParams(per_class=0, workers=1), 1, project.layout)
    return Project(root, train.run(TRAIN, SEED, project.layout))


def constant_model(project: Project, classes: list[str], favourite: int) -> Path:
    """A model that always prefers class ``favourite`` (p = e / (e + n - 1)), whatever the image:
    every image of another class is a mistake of the same, known confidence."""
    import keras

    info = json.loads((project.prepared / "info.json").read_text())
    standard = info["standard"]
    inputs = keras.Input(
        (standard["height"], standard["width"], standard["channels"]), dtype="uint8"
    )
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    dense = keras.layers.Dense(len(classes), activation="softmax")
    outputs = dense(x)
    bias = np.zeros(len(classes), dtype=np.float32)
    bias[favourite] = 1.0
    dense.set_weights([np.zeros_like(dense.get_weights()[0]), bias])
    model_dir = project.model
    model_dir.mkdir(parents=True, exist_ok=True)
    keras.Model(inputs, outputs).save(model_dir / "model.keras")
    (model_dir / "classes.json").write_text(json.dumps(classes))
    (model_dir / "preprocessing.json").write_text(json.dumps(standard))
    return model_dir

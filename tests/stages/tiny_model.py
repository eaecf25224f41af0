"""A tiny trained model and its data, made in a temporary folder for evaluate and predict tests.

The data is the learnable stripes of ``tests.conftest``; training runs the real ``train`` stage
for a few epochs (a few seconds on two cores).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgpipe.params import AugmentParams, PrepareParams, SplitParams, TrainParams
from stages import augment, prepare, split, train
from tests.conftest import layout_of, write_class_folders

CLASSES = ["circle", "square", "triangle"]


@dataclass(frozen=True)
class Project:
    root: Path
    raw: Path
    prepared: Path
    split: Path
    model: Path


def prepared_project(root: Path, classes: list[str], per_class: int = 20) -> Project:
    raw = write_class_folders(root / "raw", classes, per_class=per_class)
    prepared, split_dir = root / "prepared", root / "split"
    layout = layout_of(root, raw=raw, prepared=prepared, split=split_dir)
    prepare.run(PrepareParams(size=(16, 16), color="rgb", workers=1), layout)
    split.run(SplitParams(val=0.2, test=0.2), 7, layout)
    return Project(root, raw, prepared, split_dir, root / "model")


def trained_project(root: Path, classes: list[str] = CLASSES) -> Project:
    project = prepared_project(root, classes)
    augmented = root / "augmented"
    augment.run(
        AugmentParams(per_class=0, workers=1), 1, project.prepared, project.split, augmented
    )
    train.run(
        TrainParams(epochs=8, batch_size=16, lr=0.003),
        5,
        project.prepared,
        project.split,
        augmented,
        project.model,
        root / "live",
    )
    return project


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

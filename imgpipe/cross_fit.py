"""Out-of-sample class probabilities: k models, each trained without one fold of the images.

Confident learning ranks a label as suspect when a model that never saw the image disagrees
with it; probabilities from a model trained on the image itself mostly repeat the given label,
mislabelled or not. So the images the model may learn from (train and val) are cut into k
folds, and each fold is scored by a model trained on the other k-1. Folds keep groups whole:
an exact or near copy of an image in a fold's training half would let the model remember the
label and hide its error. Test images are scored by the mean of the k models, none of which
saw a test image.

Only prepared images are used, never ``data/augmented``: augmented samples are rotated copies
of training images, so they would carry a held-out image's label into the other folds.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from imgpipe.errors import StageError
from imgpipe.params import AuditParams

log = logging.getLogger("imgpipe.cross_fit")

PREDICT_BATCH = 256  # images per model call when scoring: memory stays small, calls few


class _NoRetracingNotice(logging.Filter):
    """TensorFlow counts traces of Keras' predict step across models: k fresh models trace it
    k times and it warns of "excessive retracing", which here is expected and costs nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


NO_RETRACING_NOTICE = _NoRetracingNotice()  # one instance: adding it again changes nothing


@dataclass(frozen=True)
class Images:
    """What the folds are cut from, and how its pixels are stored."""

    prepared_dir: Path
    classes: list[str]
    standard: dict  # the image standard of data/prepared (width, height, channels)

    @property
    def size(self) -> tuple[int, int]:
        return int(self.standard["width"]), int(self.standard["height"])

    @property
    def channels(self) -> int:
        return int(self.standard["channels"])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.size[1], self.size[0], self.channels

    @property
    def class_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.classes)}


def assign_folds(labels: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold of each image: classes spread evenly, every group inside one fold."""
    from sklearn.model_selection import StratifiedGroupKFold

    distinct = len(set(groups.tolist()))
    if distinct < folds:
        raise StageError(
            f"audit.folds is {folds} but train and val hold only {distinct} group(s) of "
            "duplicates; lower audit.folds or add images"
        )
    cutter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    fold = np.full(len(labels), -1, dtype=np.int64)
    for k, (_, held_out) in enumerate(cutter.split(np.zeros(len(labels)), labels, groups)):
        fold[held_out] = k
    return fold


def _fitted_model(images: Images, rows: pd.DataFrame, params: AuditParams, seed: int):
    import keras

    from imgpipe.dataset import sample_index, steps_per_epoch, training_batches
    from imgpipe.determinism import make_deterministic
    from imgpipe.models import build_model

    make_deterministic(seed)  # per fold, so each fold's model is the same whatever ran before
    index = sample_index([(images.prepared_dir, rows)], images.class_index)
    batches = training_batches(
        index, images.channels, images.size, params.batch_size, seed, 0, params.epochs
    )
    model = build_model(params.model, images.input_shape, len(images.classes), params.augmentation)
    model.compile(
        optimizer=keras.optimizers.Adam(params.lr),
        loss=keras.losses.SparseCategoricalCrossentropy(),
    )
    model.fit(
        batches,
        epochs=params.epochs,
        steps_per_epoch=steps_per_epoch(index, params.batch_size),
        verbose=1 if sys.stderr.isatty() else 0,
        shuffle=False,  # each epoch is already a seeded permutation
    )
    return model


def predict_probabilities(model, images: Images, rows: pd.DataFrame) -> np.ndarray:
    """Class probabilities of ``rows``, in their order, as float64 rows that sum to 1."""
    from imgpipe.dataset import encoded_images, image_batches

    if not len(rows):
        return np.zeros((0, len(images.classes)))
    batches = image_batches(
        encoded_images([(images.prepared_dir, rows)], images.class_index),
        images.channels,
        PREDICT_BATCH,
        size=images.size,
    ).map(lambda pixels, _label: pixels)
    probabilities = model.predict(batches, verbose=0).astype(np.float64)
    return probabilities / probabilities.sum(axis=1, keepdims=True)


def out_of_sample_probabilities(
    images: Images, pool: pd.DataFrame, test: pd.DataFrame, params: AuditParams, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities of each pool row from the model that left it out, mean over k of test).

    ``pool`` holds the train and val rows with a ``group`` column; rows keep their order.
    """
    import keras

    logging.getLogger("tensorflow").addFilter(NO_RETRACING_NOTICE)
    labels = pool["label"].map(images.class_index).to_numpy(np.int64)
    fold = assign_folds(labels, pool["group"].to_numpy(str), params.folds, seed)
    pool_probabilities = np.zeros((len(pool), len(images.classes)))
    test_probabilities = np.zeros((len(test), len(images.classes)))
    for k in range(params.folds):
        held_out = fold == k
        model = _fitted_model(images, pool[~held_out], params, seed + k)
        # One call for both: a predict call per dataset would retrace the model's step.
        scored = predict_probabilities(model, images, pd.concat([pool[held_out], test]))
        pool_probabilities[held_out] = scored[: int(held_out.sum())]
        test_probabilities += scored[int(held_out.sum()) :] / params.folds
        accuracy = float(np.mean(pool_probabilities[held_out].argmax(1) == labels[held_out]))
        log.info(
            "fold %d/%d: trained on %d images, %.3f accuracy on its %d held-out images",
            k + 1,
            params.folds,
            int((~held_out).sum()),
            accuracy,
            int(held_out.sum()),
        )
        keras.backend.clear_session()  # free the fold's graph before the next one is built
    return pool_probabilities, test_probabilities

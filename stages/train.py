"""train: a Keras model from ``params.train``, streamed from the shards, logged per epoch.

Inputs are the training split of ``data/prepared`` plus every sample of ``data/augmented``;
validation uses the val split. ``data/model/`` receives the model and everything needed to
use it later: class names, the image standard, and the resolved params.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from imgpipe import atomic
from imgpipe.cli import run_main
from imgpipe.params import TrainParams, load_params
from imgpipe.shards import read_manifest, read_split

log = logging.getLogger("imgpipe.train")

PREPARED_DIR = Path("data/prepared")
SPLIT_DIR = Path("data/split")
AUGMENTED_DIR = Path("data/augmented")
MODEL_DIR = Path("data/model")
LIVE_DIR = Path("reports/train")
MODEL_FILE = "model.keras"
CLASSES_FILE = "classes.json"
STANDARD_FILE = "preprocessing.json"
PARAMS_FILE = "params.json"


def run(
    params: TrainParams,
    seed: int,
    prepared_dir: Path,
    split_dir: Path,
    augmented_dir: Path,
    model_dir: Path,
    live_dir: Path,
) -> dict:
    import keras  # imported here: TensorFlow takes seconds to load
    import tensorflow as tf
    from dvclive import Live
    from dvclive.keras import DVCLiveCallback

    from imgpipe.dataset import encoded_images, image_batches
    from imgpipe.models import build_model

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()

    info = json.loads((prepared_dir / "info.json").read_text(encoding="utf-8"))
    classes, standard = info["classes"], info["standard"]
    class_index = {name: i for i, name in enumerate(classes)}
    prepared = read_manifest(prepared_dir)
    train_rows = prepared[prepared["id"].isin(read_split(split_dir, "train")["id"])]
    val_rows = prepared[prepared["id"].isin(read_split(split_dir, "val")["id"])]
    augmented = read_manifest(augmented_dir)
    train_count = len(train_rows) + len(augmented)

    channels = int(standard["channels"])
    train_data = image_batches(
        encoded_images(
            [(prepared_dir, train_rows), (augmented_dir, augmented)], class_index, shuffle_seed=seed
        ),
        channels,
        params.batch_size,
        params.shuffle_buffer,
        seed,
    )
    val_data = image_batches(
        encoded_images([(prepared_dir, val_rows)], class_index), channels, params.batch_size
    )

    model = build_model(
        params.model, (standard["height"], standard["width"], channels), len(classes)
    )
    model.compile(
        optimizer=keras.optimizers.Adam(params.lr),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    log.info(
        "training %s on %d images (%d augmented), validating on %d",
        params.model,
        train_count,
        len(augmented),
        len(val_rows),
    )

    live = Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=None)
    started = time.perf_counter()
    history = model.fit(
        train_data,
        validation_data=val_data,
        epochs=params.epochs,
        verbose=2,
        shuffle=False,  # the tf.data pipeline shuffles, seeded
        callbacks=[DVCLiveCallback(live=live)],
    )
    seconds = time.perf_counter() - started
    live.summary["train_seconds"] = round(seconds, 2)
    live.summary["train_images_per_second"] = round(train_count * params.epochs / seconds, 1)
    live.make_summary()

    with atomic.atomic_dir(model_dir) as scratch:
        model.save(scratch / MODEL_FILE)
        atomic.write_json(scratch / CLASSES_FILE, classes)
        atomic.write_json(scratch / STANDARD_FILE, standard)
        atomic.write_json(scratch / PARAMS_FILE, {"seed": seed, **params.model_dump()})
    return {"val_accuracy": float(history.history["val_accuracy"][-1]), "seconds": seconds}


def main() -> None:
    def body() -> None:
        params = load_params()
        run(
            params.train,
            params.base.seed,
            PREPARED_DIR,
            SPLIT_DIR,
            AUGMENTED_DIR,
            MODEL_DIR,
            LIVE_DIR,
        )

    run_main("train", body)


if __name__ == "__main__":
    main()

"""train: a Keras model from ``params.train``, streamed from the shards, logged per epoch.

Inputs are the training split of ``data/prepared`` plus every sample of ``data/augmented``;
validation uses the val split. ``data/model/`` receives the model and everything needed to
use it later: class names, the image standard, and the resolved params (the full layer list
of a preset included). A killed run resumes at its next epoch when rerun with the same params
and inputs; the backup that makes this possible lives outside DVC's outputs and is removed
once the model is written.
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgpipe import atomic, distribute
from imgpipe.backbones import NO_WEIGHTS
from imgpipe.cli import run_main
from imgpipe.determinism import make_deterministic
from imgpipe.errors import StageError
from imgpipe.fine_tune import (
    FROZEN,
    UNFROZEN,
    Phase,
    check_pretrained,
    freeze,
    phase_marker,
    phases,
    pretrained_layers,
    unfreeze,
)
from imgpipe.layers import LayerListError, check_augmentation, output_shapes, resolve
from imgpipe.layout import Layout
from imgpipe.model_file import save_model
from imgpipe.params import TrainParams, load_params
from imgpipe.plots import curves_image
from imgpipe.quiet_tf import import_tensorflow
from imgpipe.shards import INFO_FILE, MANIFEST, read_info, read_manifest, split_rows
from imgpipe.trained import CLASSES_FILE, MODEL_FILE, STANDARD_FILE
from imgpipe.warm_start import file_digest, warm_start

log = logging.getLogger("imgpipe.train")

PARAMS_FILE = "params.json"


def _class_weights(params: TrainParams, classes: list[str], counts) -> list[float]:
    """One loss weight per class index; 'balanced' weighs each class by total / (k * count)."""
    if params.class_weights == "none":
        return [1.0] * len(classes)
    if params.class_weights == "balanced":
        total = float(sum(counts))
        return [total / (len(classes) * max(int(n), 1)) for n in counts]
    unknown = sorted(set(params.class_weights) - set(classes))
    if unknown:
        raise StageError(
            f"train.class_weights names unknown class(es) {unknown}; classes: {classes}"
        )
    return [float(params.class_weights.get(name, 1.0)) for name in classes]


@contextmanager
def _precision(mixed: bool):
    """mixed_float16 for the run only, so later models in the same process are unaffected."""
    import keras
    import tensorflow as tf

    previous = keras.mixed_precision.global_policy().name
    if mixed:
        if not tf.config.list_physical_devices("GPU"):
            log.warning("train.mixed_precision is on without a GPU: expect slower training")
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _optimizer(params: TrainParams, steps: int):
    import keras

    lr = params.lr
    if params.schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(params.lr, decay_steps=steps * params.epochs)
    if params.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=params.momentum)
    return keras.optimizers.Adam(lr)


def _live_logger(live):
    import keras
    from dvclive.utils import standardize_metric_name

    class LiveLogger(keras.callbacks.Callback):
        """dvclive per epoch, at the epoch's own step, so a resumed run continues the curves."""

        def on_epoch_end(self, epoch, logs=None):
            live.step = epoch
            for name, value in (logs or {}).items():
                live.log_metric(standardize_metric_name(name, "dvclive.keras"), float(value))
            live.next_step()

    return LiveLogger()


def _callbacks(
    params: TrainParams, live, backup, layout: Layout, first_epoch: int, phase: int
) -> list:
    """In the order Keras runs them at an epoch's end: log, adjust, then back up."""
    import keras

    stateful = {}
    if params.schedule == "reduce_on_plateau":
        stateful["plateau"] = keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=params.plateau_factor, patience=params.plateau_patience
        )
    if params.early_stopping.patience:
        stateful["early_stopping"] = keras.callbacks.EarlyStopping(
            monitor=params.early_stopping.monitor,
            patience=params.early_stopping.patience,
            restore_best_weights=True,
            verbose=1,
        )
    callbacks = [_live_logger(live), *stateful.values()]
    callbacks += backup.callbacks(layout.train_live, stateful, first_epoch, phase)
    if params.tensorboard:
        # One folder per experiment (the backup's key), so TensorBoard can compare them.
        log_dir = layout.tensorboard / backup.key
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(log_dir)))
    return callbacks


@dataclass(frozen=True)
class Inputs:
    """What the upstream stages hand to training."""

    classes: list[str]
    standard: dict
    train: Any  # imgpipe.dataset.SampleIndex: prepared training split plus augmented samples
    val_rows: Any  # pandas.DataFrame: manifest rows of the val split
    augmented: int
    files: list[Path]  # whose content decides the training, for the backup key

    @property
    def channels(self) -> int:
        return int(self.standard["channels"])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.standard["width"]), int(self.standard["height"])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.size[1], self.size[0], self.channels


def read_inputs(layout: Layout) -> Inputs:
    from imgpipe.dataset import sample_index

    prepared_dir, split_dir, augmented_dir = layout.prepared, layout.split, layout.augmented
    info_file = prepared_dir / INFO_FILE
    info = read_info(prepared_dir)
    classes = info["classes"]
    prepared = read_manifest(prepared_dir)
    augmented = read_manifest(augmented_dir)
    train_index = sample_index(
        [(prepared_dir, split_rows(prepared, split_dir, "train")), (augmented_dir, augmented)],
        {name: i for i, name in enumerate(classes)},
    )
    val_rows = split_rows(prepared, split_dir, "val")
    if not len(train_index) or not len(val_rows):
        raise StageError(
            f"train needs training and validation images; found {len(train_index)} and "
            f"{len(val_rows)}. Add images or raise split.val"
        )
    files = [info_file, prepared_dir / MANIFEST, augmented_dir / MANIFEST]
    files += [split_dir / f"{name}.csv" for name in ("train", "val")]
    return Inputs(classes, info["standard"], train_index, val_rows, len(augmented), files)


def _checked_layers(params: TrainParams, input_shape: tuple[int, int, int]) -> list[dict]:
    """The resolved layer list, refused here if the images are too small for it."""
    try:
        layers = resolve(params.model)
        output_shapes(layers, input_shape)
    except LayerListError as err:
        raise StageError(f"train.model: {err}") from None
    return layers


def _datasets(
    inputs: Inputs, prepared_dir: Path, params, seed, first_epoch, weights, end, strategy
):
    """Training batches (pixels, one-hot, class weight) of epochs ``first_epoch`` to ``end``
    (exclusive); val batches."""
    import tensorflow as tf

    from imgpipe.dataset import encoded_images, image_batches, replica_batches, training_batches

    num_classes = len(inputs.classes)
    weight_table = tf.constant(weights, tf.float32)

    def for_loss(pixels, label):
        return pixels, tf.one_hot(label, num_classes), tf.gather(weight_table, label)

    if params.strategy == "multi_worker":

        def worker_batches(context):
            # Each worker reads only its pieces of every batch: see dataset.pipeline_pieces.
            return replica_batches(
                inputs.train,
                inputs.channels,
                inputs.size,
                params.batch_size,
                seed,
                range(first_epoch, end),
                strategy.num_replicas_in_sync,
                context.input_pipeline_id,
                context.num_input_pipelines,
            ).map(for_loss)

        train_data = strategy.distribute_datasets_from_function(worker_batches)
    else:
        train_data = training_batches(
            inputs.train,
            inputs.channels,
            inputs.size,
            params.batch_size,
            seed,
            first_epoch,
            end,
        ).map(for_loss)
    class_index = {name: i for i, name in enumerate(inputs.classes)}
    val_data = image_batches(
        encoded_images([(prepared_dir, inputs.val_rows)], class_index),
        inputs.channels,
        params.batch_size,
        size=inputs.size,
    ).map(lambda pixels, label: (pixels, tf.one_hot(label, num_classes)))
    if params.strategy == "multi_worker":
        val_data = val_data.with_options(distribute.input_options())
    return train_data, val_data


def _built_model(params: TrainParams, inputs: Inputs, augmentation, strategy):
    """(model, warm start or None): built in the strategy's scope, warm-started."""
    from imgpipe.models import build_model

    with _precision(params.mixed_precision), strategy.scope():
        model = build_model(params.model, inputs.input_shape, len(inputs.classes), augmentation)
    warm = warm_start(model, params.warm_start) if params.warm_start else None
    return model, warm


def _compile(model, strategy, params: TrainParams, steps: int) -> None:
    """(Re)compile, as at the start of each fine-tuning phase: a new optimizer for the layers
    that are trainable now."""
    import keras

    with _precision(params.mixed_precision), strategy.scope():
        model.compile(
            optimizer=_optimizer(params, steps),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=params.label_smoothing),
            metrics=["accuracy"],
        )


def _phase_params(params: TrainParams, phase: Phase, phased: bool) -> TrainParams:
    """The params one phase trains with: its own epochs for a schedule, the lower lr after a
    frozen phase."""
    if not phased:
        return params
    update = {"epochs": phase.end - phase.start}
    if phase.number == UNFROZEN:
        update["lr"] = params.lr * params.fine_tune.lr_factor
    return params.model_copy(update=update)


def _fit(model, train_data, val_data, start: int, end: int, steps, callbacks):
    import keras

    # Keras keeps the epoch a BackupAndRestore last restored and prefers it to initial_epoch;
    # left from an earlier phase it would make this phase start at the wrong epoch.
    model._initial_epoch = None
    if start < end:
        return model.fit(
            train_data,
            validation_data=val_data,
            epochs=end,
            initial_epoch=start,
            steps_per_epoch=steps,
            verbose=1 if sys.stderr.isatty() else 2,
            shuffle=False,  # each epoch is already a seeded permutation of the whole set
            callbacks=callbacks,
        )
    # Killed after the phase's last epoch (before the model was written, or before the next
    # phase began): restore its weights, train nothing.
    hooks = keras.callbacks.CallbackList(callbacks, model=model)
    hooks.on_train_begin()
    hooks.on_train_end()  # early stopping puts back the best epoch's weights here
    history = keras.callbacks.History()
    history.epoch, history.history = [], {}
    return history


def _write_model_dir(model_dir: Path, model, inputs: Inputs, resolved: dict) -> None:
    with atomic.atomic_dir(model_dir) as scratch:
        save_model(model, scratch / MODEL_FILE)  # same weights, same bytes: dvc.lock stays put
        atomic.write_json(scratch / CLASSES_FILE, inputs.classes)
        atomic.write_json(scratch / STANDARD_FILE, inputs.standard)
        atomic.write_json(scratch / PARAMS_FILE, resolved)


@dataclass(frozen=True)
class Setup:
    """What the params and the inputs decide before the first epoch."""

    settings: dict  # seed, params and resolved layers: the experiment, as the backup key sees it
    augmentation: list[dict]
    steps: int  # per epoch
    weights: list[float]  # loss weight per class index


def _setup(params: TrainParams, seed: int, inputs: Inputs, replicas: int) -> Setup:
    from imgpipe.dataset import replica_steps, steps_per_epoch

    layers = _checked_layers(params, inputs.input_shape)
    augmentation = check_augmentation(params.augmentation)
    if params.strategy == "multi_worker":
        steps = replica_steps(len(inputs.train), params.batch_size, replicas)
    else:
        steps = steps_per_epoch(inputs.train, params.batch_size)
    weights = _class_weights(params, inputs.classes, inputs.train.class_counts(len(inputs.classes)))
    settings = {"seed": seed, **params.model_dump(mode="json"), "layers": layers}
    if params.warm_start:  # the file's content, not only its name, decides the experiment
        settings["warm_start_sha256"] = file_digest(params.warm_start)
    return Setup(settings, augmentation, steps, weights)


def _resume_point(backup, epochs: int, live_dir: Path, strategy, worker) -> int:
    """The first epoch to train: the one after those a killed run of this experiment finished.

    Workers of a cluster first agree on it (``distribute.agreed_resume``).
    """
    first_epoch = min(backup.finished_epochs(), epochs)
    if worker.count > 1:
        agreed = distribute.agreed_resume(
            strategy, worker, backup.key, first_epoch, backup.previous_epochs()
        )
        if not agreed:
            backup.remove()  # whatever it holds (a half-written first backup, say) is not used
        elif agreed != first_epoch:
            backup.roll_back(agreed)
        first_epoch = agreed
    if first_epoch:
        # Counted as the metrics count it: resumed_at_epoch is the number of epochs already done.
        log.info(
            "resuming after %d of %d finished epochs (resumed_at_epoch: %d), from %s",
            first_epoch,
            epochs,
            first_epoch,
            backup.directory,
        )
        backup.restore_snapshot(live_dir, first_epoch)
    return first_epoch


def _log_start(model, replicas: int, inputs: Inputs) -> None:
    log.info(
        "training %s (%d parameters, %d replica(s)) on %d images (%d augmented), validating on %d",
        model.name,
        model.count_params(),
        replicas,
        len(inputs.train),
        inputs.augmented,
        len(inputs.val_rows),
    )


def _batch_shapes(inputs: Inputs) -> tuple:
    """What one training batch holds: pixels, one-hot labels, loss weights."""
    import keras

    return (
        keras.KerasTensor((None, *inputs.input_shape), "uint8"),
        keras.KerasTensor((None, len(inputs.classes)), "float32"),
        keras.KerasTensor((None,), "float32"),
    )


@dataclass(frozen=True)
class Run:
    """What the stage's own callbacks need besides the params, for every phase."""

    layout: Layout
    live: Any
    backup: Any
    first_epoch: int
    extra_callbacks: list
    warm: Any  # imgpipe.warm_start.WarmStart, or None


def _train_phases(model, strategy, params: TrainParams, setup: Setup, inputs: Inputs, run: Run):
    """Fit phase by phase (one phase unless fine-tuning), return (merged history, seconds)."""
    import keras

    plan = phases(params.fine_tune, params.epochs)
    with_weights = any(
        spec["type"] == "backbone" and spec["weights"] != NO_WEIGHTS
        for spec in setup.settings["layers"]
    )
    pretrained = pretrained_layers(model, with_weights, run.warm.copied if run.warm else None)
    if params.fine_tune.frozen_epochs:
        check_pretrained(pretrained, params.fine_tune)
    merged = keras.callbacks.History()
    merged.epoch, merged.history = [], {}
    started = time.perf_counter()
    for phase in plan:
        phased = params.fine_tune.frozen_epochs > 0
        if phase.number == FROZEN:
            freeze(pretrained)
        elif phased:
            unfreeze(pretrained, params.fine_tune.unfreeze)
        _compile(model, strategy, _phase_params(params, phase, phased), setup.steps)
        start = max(run.first_epoch, phase.start)
        datasets = _datasets(
            inputs,
            run.layout.prepared,
            params,
            setup.settings["seed"],
            start,
            setup.weights,
            phase.end,
            strategy,
        )
        callbacks = [phase_marker(phase.number)] if phased else []
        resumed_at = run.first_epoch if run.first_epoch > phase.start else 0
        callbacks += _callbacks(params, run.live, run.backup, run.layout, resumed_at, phase.number)
        with distribute.keras_multi_worker(model, strategy, _batch_shapes(inputs)):
            history = _fit(
                model, *datasets, start, phase.end, setup.steps, callbacks + run.extra_callbacks
            )
        merged.epoch += list(history.epoch)
        for name, values in history.history.items():
            merged.history.setdefault(name, []).extend(values)
    return merged, time.perf_counter() - started


def _end_live(live, history, first_epoch: int) -> None:
    """Close dvclive's log with how the run went; every figure in it repeats on a rerun."""
    live.summary["epochs_run"] = len(history.epoch)
    live.summary["resumed_at_epoch"] = first_epoch
    live.end()


def _draw_curves(live_dir: Path, picture: Path) -> None:
    """The per-epoch curves dvclive logged (a resumed run's earlier epochs included) as a PNG."""
    curves = {}
    for measure in ("accuracy", "loss"):
        curves[measure] = {}
        for series, folder in (("train", "train"), ("validation", "eval")):
            table = live_dir / "plots" / "metrics" / folder / f"{measure}.tsv"
            rows = table.read_text(encoding="utf-8").splitlines()[1:] if table.exists() else []
            curves[measure][series] = [
                (int(step), float(value)) for step, value in (row.split("\t") for row in rows)
            ]
    atomic.write_bytes(picture, curves_image(curves))


def _record_speed(timing_file: Path, history, seconds: float, images: int) -> float:
    """Write and log the run's speed; return images per second.

    Kept out of the metrics DVC tracks: a duration differs on every run, so as a metric it
    would change dvc.lock and dirty the git tree after each `dvc repro` of the same inputs.
    """
    epochs_run = len(history.epoch)
    images_per_second = images * epochs_run / seconds if epochs_run else 0.0
    timing = {
        "train_seconds": round(seconds, 2),
        "train_images_per_second": round(images_per_second, 1),
        "epochs_run": epochs_run,
    }
    atomic.write_json(timing_file, timing)
    log.info("trained %d epoch(s) in %.1f s, %.0f images/s", epochs_run, seconds, images_per_second)
    return images_per_second


def _resolved(setup: Setup, inputs: Inputs, replicas: int) -> dict:
    """Everything that made the model, saved beside it as params.json."""
    return {
        **setup.settings,
        "augmentation": setup.augmentation,
        "input_shape": list(inputs.input_shape),
        "classes": len(inputs.classes),
        "class_weights_resolved": dict(zip(inputs.classes, setup.weights, strict=True)),
        "replicas": replicas,
    }


def _summary(history, seconds: float, images_per_second: float, backup) -> dict:
    val_accuracy = history.history.get("val_accuracy") or [float("nan")]
    return {
        "val_accuracy": float(val_accuracy[-1]),
        "history": {name: [float(v) for v in values] for name, values in history.history.items()},
        "epochs": list(history.epoch),
        "seconds": seconds,
        "images_per_second": round(images_per_second, 1),
        "backup": str(backup.directory),
    }


def run(
    params: TrainParams, seed: int, layout: Layout, extra_callbacks: list | None = None
) -> dict:
    """Train, write ``layout.model`` atomically, return a summary.

    ``extra_callbacks`` are Keras callbacks run after the stage's own.
    """
    import_tensorflow()  # first, so that it loads quietly whatever imports it next
    # Before any TensorFlow op: a multi-worker strategy cannot be set up after one ran.
    strategy, worker = distribute.create_strategy(params.strategy)
    from dvclive import Live  # imported here, as TensorFlow is: both take seconds to load

    from imgpipe.resume import Backup, backup_key

    given, layout = layout, distribute.worker_layout(layout, worker)
    replicas = strategy.num_replicas_in_sync
    make_deterministic(seed)
    inputs = read_inputs(layout)
    setup = _setup(params, seed, inputs, replicas)
    backup = Backup(layout.train_backup, backup_key(setup.settings, inputs.files))
    first_epoch = _resume_point(backup, params.epochs, layout.train_live, strategy, worker)
    model, warm = _built_model(params, inputs, setup.augmentation, strategy)
    _log_start(model, replicas, inputs)
    live = Live(str(layout.train_live), save_dvc_exp=False, dvcyaml=None, resume=first_epoch > 0)
    progress = Run(layout, live, backup, first_epoch, list(extra_callbacks or []), warm)
    history, seconds = _train_phases(model, strategy, params, setup, inputs, progress)
    _end_live(live, history, first_epoch)
    _draw_curves(layout.train_live, layout.train_curves)
    images_per_second = _record_speed(layout.train_timing, history, seconds, len(inputs.train))
    resolved = _resolved(setup, inputs, replicas)
    if warm is not None:
        resolved["warm_start"] = warm.record()
    _write_model_dir(layout.model, model, inputs, resolved)
    backup.remove()  # only now: until the model is written, a rerun can still resume
    distribute.remove_scratch(given, worker)
    return _summary(history, seconds, images_per_second, backup)


def main() -> None:
    def body() -> None:
        params = load_params()
        run(params.train, params.base.seed, Layout())

    run_main("train", body)


if __name__ == "__main__":
    main()

"""Resuming a killed training: a backup folder per experiment, outside DVC's outputs.

DVC deletes a stage's outputs before running it, so the state that lets a rerun continue
lives elsewhere (``.train-backup/<key>/`` by default). The key hashes the resolved params and
the input manifests, so a changed experiment starts fresh instead of resuming from another
one's weights. Keras' ``BackupAndRestore`` saves the weights, optimizer and epoch count.
Saved beside it: the dvclive history of the finished epochs, because DVC will have deleted
``reports/train`` too and the curves of a resumed run should still start at epoch 1; the
random layers' state; and the early-stopping and plateau counters with the best weights so
far. A resumed run thus ends with the same model as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
from pathlib import Path

import keras
import numpy as np

log = logging.getLogger("imgpipe.train")

KERAS_DIR = "keras"
# Keras' BackupAndRestore records the number of finished epochs in this file of its folder.
KERAS_METADATA = "training_metadata.json"
KERAS_WEIGHTS = "latest.weights.h5"
# With double_checkpoint, the epoch before the latest is kept under the same names plus this.
KERAS_PREVIOUS = ".bkp"
SNAPSHOT_PREFIX = "epoch-"
RANDOM_STATE = "random_state.npz"
CALLBACK_STATE_FILE = "callbacks.json"
BEST_WEIGHTS_SUFFIX = "-best-weights.npz"


def backup_key(settings: dict, input_files: list[Path]) -> str:
    """A hash of what decides the training: the resolved settings and the input manifests."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode("utf-8"))
    for path in input_files:
        digest.update(path.name.encode("utf-8"))
        digest.update(path.read_bytes() if path.exists() else b"<missing>")
    return digest.hexdigest()[:16]


class Backup:
    """The backup folder of one experiment."""

    def __init__(self, root: Path, key: str) -> None:
        self.key = key
        self.directory = Path(root) / key

    @property
    def keras_dir(self) -> Path:
        return self.directory / KERAS_DIR

    def phase_dir(self, phase: int) -> Path:
        """Keras' backup of one fine-tuning phase: the optimizers of two phases differ, so
        each keeps its own (phase 1, or a run without phases, uses ``keras/``)."""
        return self.keras_dir if phase >= 1 else self.directory / f"{KERAS_DIR}-frozen"

    def finished_epochs(self) -> int:
        """Epochs a previous, interrupted run of this experiment completed (0: none)."""
        finished = 0
        for folder in (self.phase_dir(0), self.phase_dir(1)):
            metadata = folder / KERAS_METADATA
            if not metadata.exists():
                continue
            try:
                epoch = int(json.loads(metadata.read_text(encoding="utf-8"))["epoch"])
            except (ValueError, KeyError, TypeError):
                # Killed while Keras wrote this small file: the state is unknown, start over.
                log.warning(
                    "the backup in %s is unreadable; training starts afresh", self.directory
                )
                self.remove()
                return 0
            finished = max(finished, epoch)
        return finished

    def previous_epochs(self) -> int:
        """Epochs of the backup kept from the epoch before the latest (-1: none)."""
        metadata = self.keras_dir / f"{KERAS_METADATA}{KERAS_PREVIOUS}"
        try:
            return int(json.loads(metadata.read_text(encoding="utf-8"))["epoch"])
        except (OSError, ValueError, KeyError, TypeError):
            return -1

    def roll_back(self, epochs: int) -> None:
        """Make the previous backup, of ``epochs`` finished epochs, the one to resume from.

        For a worker of a cluster whose backup of the latest epoch the others lack.
        """
        if self.previous_epochs() != epochs:
            raise ValueError(f"no backup of {epochs} epochs in {self.keras_dir}")
        for name in (KERAS_WEIGHTS, KERAS_METADATA):
            shutil.copyfile(self.keras_dir / f"{name}{KERAS_PREVIOUS}", self.keras_dir / name)

    def restore_snapshot(self, live_dir: Path, epochs: int) -> None:
        """Put back the dvclive history written up to ``epochs`` finished epochs."""
        snapshot = self.directory / f"{SNAPSHOT_PREFIX}{epochs}" / "live"
        if not snapshot.is_dir():
            log.warning("no history saved for epoch %d; the curves start at the resume", epochs)
            return
        shutil.rmtree(live_dir, ignore_errors=True)
        shutil.copytree(snapshot, live_dir)

    def callbacks(
        self,
        live_dir: Path,
        stateful: dict[str, keras.callbacks.Callback],
        resume_epoch: int,
        phase: int = 1,
    ) -> list[keras.callbacks.Callback]:
        """To be placed after the callbacks that log, change the lr or stop early.

        ``stateful`` callbacks (early stopping, plateau) get their counters and best values
        back on resume, so patience and the best weights span the interruption.
        """
        snapshot = _EpochSnapshot(self.directory, Path(live_dir), stateful, resume_epoch)
        # Kept after fit() ends: the backup is removed only once the model is safely written.
        # double_checkpoint: a kill while the weights are written falls back to the previous
        # epoch's weights and epoch count, whose snapshot is kept for that reason.
        weights = keras.callbacks.BackupAndRestore(
            str(self.phase_dir(phase)), double_checkpoint=True, delete_checkpoint=False
        )
        return [snapshot, weights]

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
        with contextlib.suppress(OSError):  # other experiments' backups may remain
            self.directory.parent.rmdir()


def _random_state(model: keras.Model) -> list:
    """The seed-generator states of random layers: variables that are not weights.

    Keras' backup saves weights and optimizer only; without these a resumed run would draw
    different dropout masks and augmentations than an uninterrupted one.
    """
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights]


# What early stopping and the plateau schedule count between epochs (Keras attribute names).
CALLBACK_STATE = ("wait", "best", "best_epoch", "cooldown_counter", "stopped_epoch")


class _EpochSnapshot(keras.callbacks.Callback):
    """After each epoch, before Keras backs up the weights: the dvclive folder, the random
    state and the stateful callbacks' counters, in ``epoch-N/``; put back on resume.

    The two most recent snapshots are kept: if a kill lands between this one and the weights,
    the weights still point at the previous epoch, whose snapshot is still there.
    """

    def __init__(
        self,
        directory: Path,
        live_dir: Path,
        stateful: dict[str, keras.callbacks.Callback],
        resume_epoch: int,
    ) -> None:
        super().__init__()
        self.directory = directory
        self.live_dir = live_dir
        self.stateful = stateful
        self.resume_epoch = resume_epoch

    def on_train_begin(self, logs=None):
        # Runs after the stateful callbacks' own on_train_begin, which resets them.
        snapshot = self.directory / f"{SNAPSHOT_PREFIX}{self.resume_epoch}"
        if not self.resume_epoch or not (snapshot / RANDOM_STATE).exists():
            return
        with np.load(snapshot / RANDOM_STATE) as saved:
            for i, variable in enumerate(_random_state(self.model)):
                variable.assign(saved[f"state_{i}"])
        counters = json.loads((snapshot / CALLBACK_STATE_FILE).read_text(encoding="utf-8"))
        for name, callback in self.stateful.items():
            for attribute, value in counters.get(name, {}).items():
                setattr(callback, attribute, value)
            best = snapshot / f"{name}{BEST_WEIGHTS_SUFFIX}"
            if best.exists():
                with np.load(best) as saved:
                    callback.best_weights = [saved[f"w_{i}"] for i in range(len(saved.files))]

    def on_epoch_end(self, epoch, logs=None):
        finished = epoch + 1
        target = self.directory / f"{SNAPSHOT_PREFIX}{finished}"
        scratch = self.directory / f".{target.name}.partial"
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.copytree(self.live_dir, scratch / "live")
        states = {f"state_{i}": v.numpy() for i, v in enumerate(_random_state(self.model))}
        np.savez(scratch / RANDOM_STATE, **states)
        counters = {}
        for name, callback in self.stateful.items():
            counters[name] = {
                attribute: _plain(getattr(callback, attribute))
                for attribute in CALLBACK_STATE
                if getattr(callback, attribute, None) is not None
            }
            if getattr(callback, "best_weights", None) is not None:
                weights = {f"w_{i}": w for i, w in enumerate(callback.best_weights)}
                np.savez(scratch / f"{name}{BEST_WEIGHTS_SUFFIX}", **weights)
        (scratch / CALLBACK_STATE_FILE).write_text(json.dumps(counters), encoding="utf-8")
        shutil.rmtree(target, ignore_errors=True)
        scratch.rename(target)
        for old in self.directory.glob(f"{SNAPSHOT_PREFIX}*"):
            if int(old.name[len(SNAPSHOT_PREFIX) :]) < finished - 1:
                shutil.rmtree(old, ignore_errors=True)


def _plain(value):
    """JSON-able scalar: callbacks keep numpy floats and ints."""
    return float(value) if isinstance(value, (float, np.floating)) else int(value)

"""Resuming a killed training: a backup folder per experiment, outside DVC's outputs.

DVC deletes a stage's outputs before running it, so the state that lets a rerun continue
lives elsewhere (``.train-backup/<key>/`` by default). The key hashes the resolved params and
the input manifests, so a changed experiment starts fresh instead of resuming from another
one's weights. Keras' ``BackupAndRestore`` saves the weights, optimizer and epoch count; the
dvclive history of the finished epochs is saved beside it, because DVC will have deleted
``reports/train`` too, and the curves of a resumed run should still start at epoch 1.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
from pathlib import Path

import keras

log = logging.getLogger("imgpipe.train")

KERAS_DIR = "keras"
# Keras' BackupAndRestore records the number of finished epochs in this file of its folder.
KERAS_METADATA = "training_metadata.json"
LIVE_PREFIX = "live-after-epoch-"


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
        self.directory = Path(root) / key

    @property
    def keras_dir(self) -> Path:
        return self.directory / KERAS_DIR

    def finished_epochs(self) -> int:
        """Epochs a previous, interrupted run of this experiment completed (0: none)."""
        metadata = self.keras_dir / KERAS_METADATA
        if not metadata.exists():
            return 0
        return int(json.loads(metadata.read_text(encoding="utf-8"))["epoch"])

    def restore_live(self, live_dir: Path, epochs: int) -> None:
        """Put back the dvclive history written up to ``epochs`` finished epochs."""
        snapshot = self.directory / f"{LIVE_PREFIX}{epochs}"
        if not snapshot.is_dir():
            log.warning("no history saved for epoch %d; the curves start at the resume", epochs)
            return
        shutil.rmtree(live_dir, ignore_errors=True)
        shutil.copytree(snapshot, live_dir)

    def keras_callback(self) -> keras.callbacks.BackupAndRestore:
        # Kept after fit() ends: the backup is removed only once the model is safely written.
        return keras.callbacks.BackupAndRestore(str(self.keras_dir), delete_checkpoint=False)

    def live_callback(self, live_dir: Path) -> keras.callbacks.Callback:
        return _LiveSnapshot(self.directory, Path(live_dir))

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
        with contextlib.suppress(OSError):  # other experiments' backups may remain
            self.directory.parent.rmdir()


class _LiveSnapshot(keras.callbacks.Callback):
    """Copies the dvclive folder after each epoch, before Keras backs up the weights.

    The two most recent copies are kept: if a kill lands between this copy and the weights,
    the weights still point at the previous epoch, whose copy is still there.
    """

    def __init__(self, directory: Path, live_dir: Path) -> None:
        super().__init__()
        self.directory = directory
        self.live_dir = live_dir

    def on_epoch_end(self, epoch, logs=None):
        finished = epoch + 1
        target = self.directory / f"{LIVE_PREFIX}{finished}"
        scratch = self.directory / f".{target.name}.partial"
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.copytree(self.live_dir, scratch)
        shutil.rmtree(target, ignore_errors=True)
        scratch.rename(target)
        for old in self.directory.glob(f"{LIVE_PREFIX}*"):
            if int(old.name[len(LIVE_PREFIX) :]) < finished - 1:
                shutil.rmtree(old, ignore_errors=True)

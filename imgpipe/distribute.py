"""Where training runs: the tf.distribute strategy that ``train.strategy`` names, and the
worker's place in a cluster.

- ``default``: one device.
- ``mirrored``: every GPU of this machine (the CPU if there is none), one process.
- ``multi_worker``: ``tf.distribute.MultiWorkerMirroredStrategy``, one process per machine
  (or per worker), the cluster and this process's place in it read from the standard
  ``TF_CONFIG`` variable. Gradients are all-reduced over gRPC after every step, so each step
  waits for the slowest worker.

``train.batch_size`` is the global batch, whatever the number of replicas: each step's batch
is the one a one-worker run takes, cut into one piece per replica, and the lr is used as
given. The same params thus train the same model on one worker or on several (within float
summation order). To train faster with more workers, raise the batch with them and scale the
lr by the same factor yourself (the linear scaling rule), as a new experiment.

Only the chief (task ``chief``, or worker 0 when the cluster names no chief) writes what DVC
tracks (``data/model/``, ``reports/train/``) and the logs; every other worker writes the same
things into a scratch folder of its own below the backup folder, removed once it finishes.
Each worker keeps its own resume backup there; on a restart the workers first agree on the
epoch to resume from (see ``agreed_resume``).

``MultiWorkerMirroredStrategy`` must exist before TensorFlow runs any op, so the stage
creates its strategy first of all.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from imgpipe.errors import StageError
from imgpipe.layout import Layout

log = logging.getLogger("imgpipe.train")

CLUSTER_VARIABLE = "TF_CONFIG"
CLUSTER_EXAMPLE = (
    'TF_CONFIG=\'{"cluster": {"worker": ["host-a:12345", "host-b:12345"]}, '
    '"task": {"type": "worker", "index": 0}}\''
)
# A worker other than the chief writes below the backup folder (git- and DVC-ignored).
WORKER_SCRATCH = "worker-{index}"


@dataclass(frozen=True)
class Worker:
    """This process's place among the processes that train together."""

    index: int  # 0 for the chief
    count: int

    @property
    def chief(self) -> bool:
        return self.index == 0


ALONE = Worker(0, 1)


def _cluster(name: str) -> tuple[dict, dict]:
    """(cluster, task) from TF_CONFIG, checked enough to give a clear message when wrong."""
    text = os.environ.get(CLUSTER_VARIABLE, "").strip()
    if not text:
        raise StageError(
            f"train.strategy is {name} but {CLUSTER_VARIABLE} is not set: give every worker "
            f"the list of workers and its own index, e.g. {CLUSTER_EXAMPLE} (README, Scaling out)"
        )
    try:
        config = json.loads(text)
        cluster, task = dict(config["cluster"]), dict(config["task"])
        kind, index = str(task["type"]), int(task["index"])
    except (ValueError, KeyError, TypeError) as err:
        raise StageError(
            f"{CLUSTER_VARIABLE} is not a cluster description ({err!r}); expected JSON such as "
            f"{CLUSTER_EXAMPLE}"
        ) from None
    unknown = sorted(set(cluster) - {"chief", "worker"})
    if unknown or kind not in ("chief", "worker"):
        raise StageError(
            f"{CLUSTER_VARIABLE}: train.strategy {name} uses 'chief' and 'worker' tasks only "
            f"(found cluster {sorted(cluster)}, task type {kind!r})"
        )
    if not 0 <= index < len(cluster.get(kind, [])):
        raise StageError(
            f"{CLUSTER_VARIABLE}: task index {index} is outside the {len(cluster.get(kind, []))} "
            f"{kind} address(es) of the cluster"
        )
    return cluster, task


def create_strategy(name: str):
    """(tf.distribute strategy, this process's ``Worker``) for ``train.strategy`` ``name``."""
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy(), ALONE  # every local GPU, or the CPU
    if name != "multi_worker":
        return tf.distribute.get_strategy(), ALONE
    cluster, task = _cluster(name)
    chiefs = len(cluster.get("chief", []))
    index = int(task["index"]) + (chiefs if task["type"] == "worker" else 0)
    worker = Worker(index, chiefs + len(cluster.get("worker", [])))
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    log.info(
        "worker %d of %d (%s), %d replica(s) in all",
        worker.index,
        worker.count,
        "chief" if worker.chief else "not the chief: writes only to a scratch folder",
        strategy.num_replicas_in_sync,
    )
    return strategy, worker


def worker_layout(layout: Layout, worker: Worker) -> Layout:
    """The chief's layout as given; another worker's outputs moved to its scratch folder."""
    if worker.chief:
        return layout
    scratch = scratch_folder(layout, worker)
    return replace(
        layout,
        model=scratch / "model",
        train_live=scratch / "live",
        train_curves=scratch / "live" / "curves.png",
        train_backup=scratch / "backup",
        tensorboard=scratch / "tensorboard",
        train_timing=scratch / "timing.json",
    )


def scratch_folder(layout: Layout, worker: Worker) -> Path:
    return layout.train_backup / WORKER_SCRATCH.format(index=worker.index)


def remove_scratch(layout: Layout, worker: Worker) -> None:
    """Once training ended well: a non-chief's scratch folder, and the backup root if empty."""
    if worker.chief:
        return
    shutil.rmtree(scratch_folder(layout, worker), ignore_errors=True)
    with contextlib.suppress(OSError):  # the chief's backup or other experiments' remain
        layout.train_backup.rmdir()


def gathered(strategy, worker: Worker, values: list[int]) -> list[list[int]]:
    """Every worker's ``values``, in worker order: one all-gather over the cluster."""
    import tensorflow as tf

    mine = tf.constant([values], tf.int64)

    def gather():
        return tf.distribute.get_replica_context().all_gather(mine, axis=0)

    rows = strategy.experimental_local_results(strategy.run(gather))[0].numpy().tolist()
    # One row per replica, a worker's replicas (its GPUs) next to each other.
    return rows[:: max(1, len(rows) // worker.count)]


def agreed_resume(strategy, worker: Worker, key: str, finished: int, previous: int) -> int:
    """The epoch every worker resumes from, given each one's finished epochs.

    Workers step together, but a kill can land between two workers' end-of-epoch backups,
    so one may be an epoch ahead. Each keeps its previous backup as well (``previous``, -1 if
    none), so all resume from the smallest count when every worker holds it; otherwise from
    the start. Workers whose params or inputs differ (a different backup key) are refused.
    """
    rows = gathered(strategy, worker, [int(key, 16) & (2**62 - 1), finished, previous])
    keys = {row[0] for row in rows}
    if len(keys) > 1:
        raise StageError(
            "the workers train on different params or data (their params and input manifests "
            "hash differently): check out the same commit and run `dvc pull` (or `dvc repro "
            "augment`) on every machine"
        )
    target = min(row[1] for row in rows)
    if all(target in (row[1], row[2]) for row in rows):
        return target
    log.warning("the workers' backups are of epochs %s: training starts afresh", rows)
    return 0


def input_options():
    """tf.data options for a dataset Keras splits among workers itself (validation)."""
    import tensorflow as tf

    options = tf.data.Options()
    # By element: the stream is generated, so there are no files to split by.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options


@contextmanager
def keras_multi_worker(model, strategy, batch_shapes: tuple) -> Iterator[None]:
    """Let Keras 3's ``fit`` run under ``MultiWorkerMirroredStrategy`` (Keras 3.15).

    Two of its steps fail there: before the first step it averages a whole input batch across
    workers to build the model's metrics (``strategy.reduce`` of a nested structure, which
    the strategy rejects), and after each step it averages the scalar logs with ``axis=0``
    (invalid for a scalar). So the metrics are built here from ``batch_shapes``
    (KerasTensors), that first step is skipped, and the logs are averaged over replicas
    without an axis. Both are put back on leaving; under any other strategy nothing changes.
    """
    import keras
    from keras.src.backend.tensorflow import trainer

    if not trainer._collective_all_reduce_multi_worker(strategy):
        yield
        return
    with strategy.scope():
        model._symbolic_build(data_batch=batch_shapes)
    original = trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean"):
            return keras.tree.map_structure(
                lambda value: strategy.reduce("MEAN", value, axis=None), values
            )
        return original(values, strategy, reduction)

    trainer.reduce_per_replica = reduce_per_replica
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    try:
        yield
    finally:
        trainer.reduce_per_replica = original
        del model._maybe_symbolic_build

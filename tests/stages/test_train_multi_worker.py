"""Two worker processes on 127.0.0.1 train one model together (``train.strategy: multi_worker``).

One test does it all, since each start of a cluster costs two TensorFlow start-ups: the two
workers are killed after an epoch, restarted, and must then end with the model a one-worker
run of the same global batch trains, each having read its share of every epoch's batches.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml

from imgpipe.dataset import TRACE_VARIABLE, epoch_order
from imgpipe.distribute import Worker, agreed_resume, worker_layout
from imgpipe.errors import StageError
from imgpipe.layout import Layout
from imgpipe.params import AugmentParams, TrainParams
from stages import augment, train
from tests.conftest import REPO_ROOT, layout_of
from tests.tiny_model import CLASSES, prepared_project

SEED = 3
EPOCHS = 4
# Small enough to start fast; no dropout, batch norm or random layers, which draw or
# normalize per replica and so would differ from one replica by more than rounding.
MODEL = [
    {"type": "conv", "filters": 4, "kernel": 3},
    {"type": "max_pool"},
    {"type": "flatten"},
]


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start_cluster(project: Path, trace: Path) -> list[subprocess.Popen]:
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "TF_CONFIG": json.dumps(config),
            TRACE_VARIABLE: str(trace),
        }
        log = open(project / f"worker-{index}.log", "ab")  # noqa: SIM115 (closed by the OS)
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "stages.train"],
                cwd=project,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    return processes


def _wait(processes: list[subprocess.Popen], project: Path) -> None:
    for index, process in enumerate(processes):
        try:
            code = process.wait(timeout=180)
        except subprocess.TimeoutExpired:
            for p in processes:
                p.kill()
            code = "timeout"
        assert code == 0, _logs(project, f"worker {index} ended with {code}")


def _kill_after_an_epoch(processes: list[subprocess.Popen], project: Path) -> None:
    """SIGKILL worker 1, then the chief, once both have backed up an epoch."""
    deadline = time.monotonic() + 180
    chief = ".train-backup/*/keras/training_metadata.json"
    other = ".train-backup/worker-1/backup/*/keras/training_metadata.json"
    try:
        while not (list(project.glob(chief)) and list(project.glob(other))):
            assert all(p.poll() is None for p in processes), _logs(project, "a worker ended")
            assert time.monotonic() < deadline, _logs(project, "no backup appeared")
            time.sleep(0.01)
    finally:
        for process in reversed(processes):
            process.kill()
            process.wait()


def _logs(project: Path, what: str) -> str:
    tails = [
        f"worker {i}:\n{(project / f'worker-{i}.log').read_text(errors='replace')[-2000:]}"
        for i in range(2)
    ]
    return "\n".join([what, *tails])


def _weights(model_file: Path) -> list[np.ndarray]:
    return keras.saving.load_model(model_file).get_weights()


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cluster")
    prepared_project(root, CLASSES, per_class=20)
    augment.run(AugmentParams(per_class=0, workers=1), 1, Layout.under(root))
    return root


def test_two_workers_train_the_one_worker_model_and_resume_after_a_kill(project, tmp_path):
    inputs = train.read_inputs(Layout.under(project))
    size = len(inputs.train)
    # A global batch that splits evenly in two and into whole steps, so each replica's mean
    # loss weighs as much as in the one-worker batch.
    batch = next(b for b in range(4, 9, 2) if size % b == 0)
    settings = {"model": MODEL, "epochs": EPOCHS, "batch_size": batch, "lr": 0.001}

    alone = layout_of(
        tmp_path / "alone",
        prepared=inputs_dir(project, "prepared"),
        split=inputs_dir(project, "split"),
        augmented=inputs_dir(project, "augmented"),
    )
    train.run(TrainParams(**settings), SEED, alone)

    params = {"base": {"seed": SEED}, "train": {**settings, "strategy": "multi_worker"}}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    trace = tmp_path / "trace"
    trace.mkdir()
    _kill_after_an_epoch(_start_cluster(project, trace), project)
    assert not (project / "data" / "model").exists()
    _wait(_start_cluster(project, trace), project)

    live = json.loads((project / "reports" / "train" / "metrics.json").read_text())
    assert 1 <= live["resumed_at_epoch"] < EPOCHS, _logs(project, str(live))
    assert live["epochs_run"] == EPOCHS - live["resumed_at_epoch"]
    # Only the chief's outputs remain; the other worker's scratch folder and every backup
    # are gone.
    assert (project / "data" / "model" / "model.keras").exists()
    assert not (project / ".train-backup").exists()
    resolved = json.loads((project / "data" / "model" / "params.json").read_text())
    assert resolved["replicas"] == 2

    # Same global batches, same lr: the same model up to float summation order (the
    # all-reduce adds the two halves' gradients, one batch's mean adds all at once). Measured:
    # at most 3e-8, a few float32 rounding steps. One Adam step moves a weight by about lr
    # (1e-3), so 1e-5 still catches a step missed, a batch taken twice or a piece left out.
    together = _weights(project / "data" / "model" / "model.keras")
    reference = _weights(alone.model / "model.keras")
    for mine, theirs in zip(together, reference, strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-5)

    # Each worker read its own half of every batch of every epoch: the first half of the
    # one-worker batch for worker 0, the second for worker 1.
    records = {}
    for index in range(2):
        for line in (trace / f"pipeline-{index}.jsonl").read_text().splitlines():
            row = json.loads(line)
            records[row["pipeline"], row["epoch"]] = row["samples"]
    for epoch in range(EPOCHS):
        order = epoch_order(size, SEED, epoch)
        halves = [[], []]
        for start in range(0, size, batch):
            halves[0] += order[start : start + batch // 2].tolist()
            halves[1] += order[start + batch // 2 : start + batch].tolist()
        assert records[0, epoch] == halves[0], epoch
        assert records[1, epoch] == halves[1], epoch


def inputs_dir(project: Path, name: str) -> Path:
    return getattr(Layout.under(project), name)


def test_cluster_description_mistakes_are_named(monkeypatch):
    from imgpipe.distribute import create_strategy

    for config, expected in (
        (None, "TF_CONFIG is not set"),
        ("{not json", "not a cluster description"),
        ('{"cluster": {"ps": ["a:1"]}, "task": {"type": "ps", "index": 0}}', "'chief' and"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}', "index 3"),
    ):
        if config is None:
            monkeypatch.delenv("TF_CONFIG", raising=False)
        else:
            monkeypatch.setenv("TF_CONFIG", config)
        with pytest.raises(StageError, match=expected):
            create_strategy("multi_worker")


def test_only_the_chief_writes_where_dvc_looks():
    layout = Layout()
    assert worker_layout(layout, Worker(0, 2)) == layout
    other = worker_layout(layout, Worker(1, 2))
    moved = ("model", "train_live", "train_curves", "train_backup", "tensorboard", "train_timing")
    for name in moved:
        assert getattr(other, name).is_relative_to(Path(".train-backup") / "worker-1"), name
    assert other.prepared == layout.prepared and other.split == layout.split


def test_workers_agree_on_the_epoch_to_resume_from(monkeypatch):
    from imgpipe import distribute

    def cluster(*rows):
        monkeypatch.setattr(distribute, "gathered", lambda *args: [list(r) for r in rows])

    key = "00000000000000ab"
    cluster((0xAB, 3, 2), (0xAB, 3, 2))
    assert agreed_resume(None, Worker(0, 2), key, 3, 2) == 3
    cluster((0xAB, 3, 2), (0xAB, 2, 1))  # killed between the two workers' backups
    assert agreed_resume(None, Worker(0, 2), key, 3, 2) == 2
    cluster((0xAB, 1, -1), (0xAB, 0, -1))  # no earlier backup to fall back on
    assert agreed_resume(None, Worker(0, 2), key, 1, -1) == 0
    cluster((0xAB, 3, 2), (0xCD, 3, 2))
    with pytest.raises(StageError, match="different params or data"):
        agreed_resume(None, Worker(0, 2), key, 3, 2)

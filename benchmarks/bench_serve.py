"""serve under load: concurrent clients posting photo JPEGs to the real server on 127.0.0.1.

The server is the ``serve`` command in a subprocess, once with the Keras model and once with
its ONNX export, measured alternately. Each client is a thread with its own HTTP session that
posts one JPEG per request (``benchmarks.corpus``, photo-sized) until the time is up. The
model is an untrained ``three_conv`` at 64x64 RGB: its weights do not change the cost.
Reported: requests/s, p50 and p99 latency, errors (any makes the benchmark fail), and the
server's resident memory after a warm-up and at the end (it must not grow with requests).
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.corpus import corpus_members
from benchmarks.harness import Comparison, Growth, median
from imgpipe.images import Standard

log = logging.getLogger("benchmarks.serve")

FULL_SECONDS = 10.0  # of load per measurement at scale 1
CLIENTS = 4
IMAGES = 32
WARM_UP = 20  # requests before the first memory reading
START_TIMEOUT = 120.0
STANDARD = Standard(width=64, height=64, color="rgb", resample="lanczos")


@dataclass
class Load:
    seconds: float
    latencies: list[float] = field(default_factory=list)  # seconds, of answered requests
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)  # the clients share it

    @property
    def per_second(self) -> float:
        return len(self.latencies) / self.seconds

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1000) if self.latencies else 0.0


def _keras_model(folder: Path) -> Path:
    """data/model as train writes it."""
    from imgpipe.models import build_model

    model_dir = folder / "model"
    model_dir.mkdir(parents=True)
    model = build_model("three_conv", (STANDARD.height, STANDARD.width, 3), 2)
    model.save(model_dir / "model.keras")
    (model_dir / "classes.json").write_text(json.dumps(["a", "b"]))
    (model_dir / "preprocessing.json").write_text(json.dumps(STANDARD.to_dict()))
    return model_dir


def _onnx_export(model_dir: Path, folder: Path) -> Path:
    """The model's ONNX export with its model.json, as the export stage writes them."""
    from imgpipe import atomic
    from imgpipe.exporters import write_onnx
    from imgpipe.trained import load_trained
    from stages.export import metadata

    folder.mkdir()
    trained = load_trained(model_dir)
    write_onnx(trained.model, folder / "model.onnx")
    atomic.write_json(folder / "model.json", metadata(trained, {"onnx": "model.onnx"}))
    return folder / "model.onnx"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """``serve --model path`` in a subprocess on a free port of 127.0.0.1."""

    def __init__(self, model: Path, log_file: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_file = log_file
        command = [sys.executable, "-m", "imgpipe.serve", "--model", str(model)]
        with open(log_file, "wb") as output:
            self.process = subprocess.Popen(
                [*command, "--port", str(self.port)],
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def wait_until_up(self) -> None:
        import requests

        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                tail = self.log_file.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"serve exited with {self.process.returncode}:\n{tail}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/health", timeout=1).ok:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"serve did not answer within {START_TIMEOUT:g} s")
            time.sleep(0.1)

    def rss_mib(self) -> float:
        import psutil

        return psutil.Process(self.process.pid).memory_info().rss / 2**20

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _client(url: str, images: list[tuple[str, bytes]], start: int, deadline: float, load: Load):
    import requests

    with requests.Session() as session:
        index = start
        while time.monotonic() < deadline:
            name, data = images[index % len(images)]
            index += 1
            began = time.perf_counter()
            try:
                answer = session.post(f"{url}/predict", files={"files": (name, data)}, timeout=30)
                ok = answer.status_code == 200 and len(answer.json()["predictions"]) == 1
                problem = "" if ok else f"{answer.status_code} {answer.text[:200]}"
            except (requests.RequestException, ValueError, KeyError) as err:
                problem = f"{type(err).__name__}: {err}"
            with load.lock:
                if problem:
                    load.errors.append(problem)
                else:
                    load.latencies.append(time.perf_counter() - began)


def _load(server: Server, images: list[tuple[str, bytes]], seconds: float) -> Load:
    """``CLIENTS`` threads posting one image per request for ``seconds``."""
    load = Load(seconds)
    deadline = time.monotonic() + seconds
    threads = [
        threading.Thread(target=_client, args=(server.url, images, i * 7, deadline, load))
        for i in range(CLIENTS)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    load.seconds = time.perf_counter() - started
    return load


def _warm_up(server: Server, images: list[tuple[str, bytes]]) -> None:
    import requests

    with requests.Session() as session:
        for name, data in images[:WARM_UP] * (1 + WARM_UP // len(images)):
            session.post(f"{server.url}/predict", files={"files": (name, data)}, timeout=60)


def run(scale: float, repeats: int) -> list[Comparison | Growth]:
    seconds = max(1.0, FULL_SECONDS * scale)
    images = [(Path(name).name, data) for name, data in corpus_members(IMAGES, seed=3)]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = _keras_model(Path(tmp))
        servers = {"keras": Server(model_dir, Path(tmp) / "keras.log")}
        try:
            # Exported while the Keras server starts (loading TensorFlow takes seconds).
            onnx = _onnx_export(model_dir, Path(tmp) / "export")
            servers = {"onnx": Server(onnx, Path(tmp) / "onnx.log"), **servers}
            for server in servers.values():
                server.wait_until_up()
            before = {}
            for fmt, server in servers.items():
                _warm_up(server, images)
                before[fmt] = server.rss_mib()
            loads: dict[str, list[Load]] = {fmt: [] for fmt in servers}
            for _ in range(repeats):
                for fmt, server in servers.items():
                    loads[fmt].append(_load(server, images, seconds))
            after = {fmt: server.rss_mib() for fmt, server in servers.items()}
        finally:
            for server in servers.values():
                server.stop()
    for fmt, runs in loads.items():
        for load in runs:
            log.info(
                "serve %s: %.1f req/s, p50 %.1f ms, p99 %.1f ms, %d errors; RSS %.0f -> %.0f MiB",
                fmt,
                load.per_second,
                load.percentile_ms(50),
                load.percentile_ms(99),
                len(load.errors),
                before[fmt],
                after[fmt],
            )
    errors = [error for runs in loads.values() for load in runs for error in load.errors]
    if errors:
        raise RuntimeError(f"{len(errors)} request(s) failed, first: {errors[0]}")
    return _rows(loads, before, after)


def _rows(loads: dict[str, list[Load]], before: dict, after: dict) -> list[Comparison | Growth]:
    def rates(fmt: str) -> list[float]:
        return [load.per_second for load in loads[fmt]]

    def p(fmt: str, q: float) -> list[float]:
        return [load.percentile_ms(q) for load in loads[fmt]]

    rows: list[Comparison | Growth] = [
        Comparison(
            stage="serve",
            what=f"{CLIENTS} clients, 1 JPEG/request, onnx",
            unit="req/s",
            ours=median(rates("onnx")),
            plain=median(rates("keras")),
            plain_name="the same server with --model model.keras (TensorFlow)",
            samples={"ours": rates("onnx"), "plain": rates("keras")},
        ),
        *(
            Comparison(
                stage="serve",
                what=f"p{q} latency, onnx vs keras",
                unit="ms",
                ours=median(p("onnx", q)),
                plain=median(p("keras", q)),
                plain_name="the same server with --model model.keras",
                higher_is_better=False,
                samples={"ours": p("onnx", q), "plain": p("keras", q)},
            )
            for q in (50, 99)
        ),
    ]
    for fmt in loads:
        requests_served = sum(len(load.latencies) for load in loads[fmt])
        rows.append(
            Growth(
                stage="serve",
                what=f"server RSS ({fmt}), warm vs end",
                unit="MiB",
                small=round(before[fmt], 1),
                large=round(after[fmt], 1),
                small_size=WARM_UP,
                large_size=WARM_UP + requests_served,
                goal=1.1,
            )
        )
    log.info(
        "serve: %s requests in all, medians %s",
        sum(len(load.latencies) for runs in loads.values() for load in runs),
        {fmt: round(statistics.median(rates(fmt)), 1) for fmt in loads},
    )
    return rows

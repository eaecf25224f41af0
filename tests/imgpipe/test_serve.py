"""serve over real HTTP on 127.0.0.1: good uploads answered as predict answers them, bad ones
refused with a 4xx JSON error naming each file, and the server still up afterwards."""

from __future__ import annotations

import io
import json
import socket
import threading
import time

import numpy as np
import pytest
import requests

from imgpipe import predict, runtimes
from imgpipe.serve import Limits, create_app
from tests.conftest import class_image
from tests.imgpipe.test_images import png_header_only
from tests.tiny_model import CLASSES

LIMITS = Limits(request_bytes=200_000, files=5)
METRICS = {"accuracy": 0.75, "per_class": {"circle": {"f1": 0.5}}}


@pytest.fixture(scope="module")
def onnx_model(trained_project, tmp_path_factory):
    """The shared model as ONNX, the one export this file needs, with its model.json."""
    from imgpipe import atomic
    from imgpipe.exporters import write_onnx
    from imgpipe.trained import load_trained
    from stages.export import metadata

    folder = tmp_path_factory.mktemp("served")
    trained = load_trained(trained_project.model)
    write_onnx(trained.model, folder / "model.onnx")
    atomic.write_json(folder / "model.json", metadata(trained, {"onnx": "model.onnx"}))
    return folder / "model.onnx"


@pytest.fixture(scope="module")
def server(onnx_model, tmp_path_factory):
    """uvicorn in a thread, on a free port of 127.0.0.1; yields the base URL."""
    import uvicorn

    metrics = tmp_path_factory.mktemp("reports") / "metrics.json"
    metrics.write_text(json.dumps(METRICS))
    app = create_app(runtimes.load(onnx_model), top_k=2, limits=LIMITS, metrics=metrics)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    running = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False))
    thread = threading.Thread(target=running.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not running.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    running.should_exit = True
    thread.join(timeout=10)
    listener.close()


def _png(label: int, sample: int) -> bytes:
    buffer = io.BytesIO()
    class_image(label, sample).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(label: int, sample: int) -> bytes:
    buffer = io.BytesIO()
    class_image(label, sample, size=(64, 48)).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _post(server: str, files: list[tuple[str, bytes]], **options) -> requests.Response:
    return requests.post(
        f"{server}/predict",
        files=[("files", (name, data)) for name, data in files],
        timeout=30,
        **options,
    )


def test_health_and_model_describe_what_is_served(server):
    assert requests.get(f"{server}/health", timeout=10).json() == {
        "status": "ok",
        "format": "onnx",
    }
    described = requests.get(f"{server}/model", timeout=10).json()
    assert described["classes"] == CLASSES and described["format"] == "onnx"
    assert described["standard"]["width"] == 16 and described["standard"]["color"] == "rgb"
    assert described["metrics"] == METRICS
    assert described["limits"]["max_upload_bytes"] == LIMITS.request_bytes
    assert described["limits"]["max_decoded_pixels"] == 50_000_000


def test_good_uploads_get_what_predict_gives(server, onnx_model, tmp_path):
    uploads = [(f"{name} {i}.png", _png(i, 300)) for i, name in enumerate(CLASSES)]
    uploads.append(("photo.jpg", _jpeg(1, 301)))
    answer = _post(server, uploads)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [p["file"] for p in body["predictions"]] == [name for name, _ in uploads]
    assert [p["top_k"][0]["label"] for p in body["predictions"]] == [*CLASSES, "square"]
    assert all(len(p["top_k"]) == 2 for p in body["predictions"])
    # The same files through predict: the same standardizing, the same probabilities.
    for name, data in uploads:
        (tmp_path / name).write_bytes(data)
    report = predict.run([str(tmp_path / name) for name, _ in uploads], onnx_model, 2, 8, 1)
    assert [p["top_k"] for p in report.predictions] == [p["top_k"] for p in body["predictions"]]
    one = _post(server, uploads[:1], params={"top_k": "1"}).json()
    assert one["top_k"] == 1 and len(one["predictions"][0]["top_k"]) == 1


def test_bad_uploads_get_a_4xx_json_error_naming_each_file(server):
    good = ("good.png", _png(0, 310))
    whole = _png(2, 311)
    answer = _post(
        server,
        [
            ("empty.jpg", b""),
            ("notes.jpg", b"not a picture"),
            good,
            ("cut.png", whole[: len(whole) // 2]),
            ("huge.png", png_header_only(12_000, 7_000)),
        ],
    )
    assert answer.status_code == 422
    body = answer.json()
    assert {f["file"]: f["kind"] for f in body["files"]} == {
        "empty.jpg": "empty",
        "notes.jpg": "not_image",
        "cut.png": "truncated",
        "huge.png": "too_large",
    }
    assert body["error"].startswith("4 of 5 file(s) are not usable images: empty.jpg: empty")
    assert "over the limit of 50000000 pixels" in body["error"]

    rng = np.random.default_rng(0)
    too_big = rng.integers(0, 256, LIMITS.request_bytes, dtype=np.uint8).tobytes()
    refused = {
        "over the limit": _post(server, [good, ("big.bin", too_big)]),
        "too many": _post(server, [good] * (LIMITS.files + 1)),
        "text field": requests.post(
            f"{server}/predict", files={"files": (None, "not a file")}, timeout=10
        ),
        "no field": _post(server, []),
        "json": requests.post(f"{server}/predict", json={"files": []}, timeout=10),
        "bad k": _post(server, [good], params={"top_k": "0"}),
        "wrong method": requests.get(f"{server}/predict", timeout=10),
    }
    statuses = {what: answer.status_code for what, answer in refused.items()}
    assert statuses == {
        "over the limit": 413,
        "too many": 400,
        "text field": 422,
        "no field": 415,
        "json": 415,
        "bad k": 422,
        "wrong method": 405,
    }
    errors = {what: answer.json()["error"] for what, answer in refused.items()}
    assert "over the limit of 0.190735 MB" in errors["over the limit"]
    assert "while reading big.bin" in errors["over the limit"]
    assert "Too many files. Maximum number of files is 5" in errors["too many"]
    assert "no image files in the form field 'files' (fields sent: files)" in errors["text field"]
    assert "send the images as a multipart form" in errors["json"]
    # Nothing of that hurt the server: it answers the next good request as before.
    assert _post(server, [good]).json()["predictions"][0]["top_k"][0]["label"] == "circle"

"""serve: the trained model, or any export of it, behind HTTP.

    serve                                        # the project's data/model, 127.0.0.1:8000
    serve --model data/export/model.onnx --port 8080 --top-k 3
    curl -F files=@photo.jpg -F files=@other.png http://127.0.0.1:8000/predict

``POST /predict`` takes one or more images as multipart form files in the field ``files``
(``?top_k=N`` overrides ``--top-k``) and answers the top-k labels of each with their
probabilities. ``GET /health`` says it is up, ``GET /model`` gives the classes, the image
standard and the training run's test metrics (``reports/metrics.json``) when there are any.

Uploads become pixels through ``imgpipe.images.standardize_file``, the function ``prepare``
used, with the standard saved beside the model. Bad input never costs more than a 4xx JSON
answer naming what was wrong: a request body over ``--max-upload-mb`` (413), a body that is
not a multipart form or is malformed (415, 400), and files that are empty, not images,
truncated, corrupt or over the pixel limit of ``imgpipe.images.MAX_DECODED_PIXELS`` (422,
each file named with its reason). Decoding and inference run in worker threads, so the
event loop keeps answering while a batch is computed; one inference runs at a time, since
each runtime already spreads one call over every core and a TFLite interpreter must not be
shared by threads.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from imgpipe import runtimes
from imgpipe.cli import run_main
from imgpipe.errors import StageError
from imgpipe.images import MAX_DECODED_PIXELS, Rejection, model_array, standardize_file
from imgpipe.labels import display_name
from imgpipe.layout import Layout, find_project
from imgpipe.predict import project_model_dir, ranked
from imgpipe.runtimes import Model

log = logging.getLogger("imgpipe.serve")

FIELD = "files"  # the form field that holds the images
DEFAULT_HOST = "127.0.0.1"  # this machine only, unless asked otherwise
DEFAULT_PORT = 8000
DEFAULT_TOP_K = 3
DEFAULT_MAX_UPLOAD_MB = 32.0
DEFAULT_MAX_FILES = 64
MAX_TOP_K = 100
MB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    request_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * MB)
    files: int = DEFAULT_MAX_FILES

    def to_dict(self) -> dict:
        return {
            "max_upload_bytes": self.request_bytes,
            "max_files": self.files,
            "max_decoded_pixels": MAX_DECODED_PIXELS,
        }


class BadRequest(Exception):
    """A request the server answers with ``status`` and a JSON body saying what is wrong."""

    def __init__(self, status: int, error: str, files: list[dict] | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.body: dict = {"error": error, **({"files": files} if files is not None else {})}


class _TooLarge(Exception):
    pass


class NamingParser(MultiPartParser):
    """Starlette's parser, remembering the file being read when the body grows too large."""

    current_file: str | None = None

    def on_headers_finished(self) -> None:
        super().on_headers_finished()
        part = self._current_part  # the part whose headers just ended
        if part.file is not None:
            self.current_file = part.file.filename or ""


def _name(filename: str | None) -> str:
    return display_name(filename) if filename else "(no file name)"


async def _limited(stream: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    received = 0
    async for chunk in stream:
        received += len(chunk)
        if received > limit:
            raise _TooLarge
        yield chunk


async def read_uploads(request: Request, limits: Limits) -> list[tuple[str, bytes]]:
    """(file name, bytes) of each file in the form field ``files``; BadRequest otherwise."""
    over = f"the request body is over the limit of {limits.request_bytes / MB:g} MB"
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise BadRequest(
            415,
            f"send the images as a multipart form (field {FIELD!r}), e.g. curl -F "
            f"{FIELD}=@photo.jpg; got content type {content_type or 'none'!r}",
        )
    # Read up to the limit, not refused on Content-Length alone: so the answer can name the
    # file that took the body over it.
    parser = NamingParser(
        request.headers,
        _limited(request.stream(), limits.request_bytes),
        max_files=limits.files,
        max_fields=limits.files,
    )
    try:
        form = await parser.parse()
    except _TooLarge:
        where = f" while reading {_name(parser.current_file)}" if parser.current_file else ""
        raise BadRequest(413, f"{over}{where}; send fewer or smaller files") from None
    except MultiPartException as err:
        raise BadRequest(400, f"malformed multipart form: {err}") from None
    except ClientDisconnect:
        raise BadRequest(400, "the client closed the connection before the body ended") from None
    try:
        values = form.getlist(FIELD)
        texts = [value for value in values if not isinstance(value, UploadFile)]
        if texts or not values:
            present = sorted(set(form.keys()))
            raise BadRequest(
                422,
                f"no image files in the form field {FIELD!r} (fields sent: "
                f"{', '.join(present) or 'none'}); send each image as a file, e.g. curl -F "
                f"{FIELD}=@photo.jpg",
            )
        return [(_name(value.filename), await value.read()) for value in values]
    finally:
        await form.close()


def _decoded(model: Model, uploads: list[tuple[str, bytes]]) -> list[np.ndarray]:
    """Pixels of every upload, or BadRequest naming each file that gives none, and why."""
    pixels, bad = [], []
    for name, data in uploads:
        result = standardize_file(data, model.standard)
        if isinstance(result, Rejection):
            bad.append({"file": name, "kind": result.kind, "reason": result.reason})
        else:
            pixels.append(model_array(result[0]))
    if bad:
        raise BadRequest(
            422,
            f"{len(bad)} of {len(uploads)} file(s) are not usable images: "
            + "; ".join(f"{b['file']}: {b['reason']}" for b in bad),
            bad,
        )
    return pixels


def _top_k(request: Request, default: int, classes: int) -> int:
    text = request.query_params.get("top_k")
    if text is None:
        return min(default, classes)
    try:
        k = int(text)
    except ValueError:
        k = 0
    if not 1 <= k <= MAX_TOP_K:
        raise BadRequest(422, f"top_k must be a whole number from 1 to {MAX_TOP_K}, got {text!r}")
    return min(k, classes)


def metrics_near(model_path: Path) -> Path | None:
    """reports/metrics.json of the project holding the model, or of the current folder's."""
    for start in (model_path if model_path.is_dir() else model_path.parent, Path(".")):
        project = find_project(start)
        if project is not None and (project / Layout().metrics).is_file():
            return project / Layout().metrics
    return None


def _read_metrics(path: Path | None) -> dict | None:
    if path is None:
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def create_app(
    model: Model,
    top_k: int = DEFAULT_TOP_K,
    limits: Limits | None = None,
    metrics: Path | None = None,
) -> FastAPI:
    """The FastAPI application serving ``model``."""
    limits = limits or Limits()
    inference = threading.Lock()
    app = FastAPI(title="imgpipe", summary="image classification with the trained model")

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, err: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(err.detail)}, status_code=err.status_code)

    def answer(uploads: list[tuple[str, bytes]], k: int) -> dict:
        pixels = _decoded(model, uploads)
        with inference:
            tops = ranked(model, np.stack(pixels), k)
        return {
            "format": model.format,
            "top_k": k,
            "predictions": [
                {"file": name, "top_k": top} for (name, _), top in zip(uploads, tops, strict=True)
            ],
        }

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        try:
            k = _top_k(request, top_k, len(model.classes))
            uploads = await read_uploads(request, limits)
            return JSONResponse(await run_in_threadpool(answer, uploads, k))
        except BadRequest as err:
            return JSONResponse(err.body, status_code=err.status)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "format": model.format}

    @app.get("/model")
    async def describe() -> dict:
        return {
            "format": model.format,
            "path": str(model.info.path),
            "classes": model.classes,
            "standard": model.standard.to_dict(),
            "top_k": top_k,
            "limits": limits.to_dict(),
            "metrics": _read_metrics(metrics),
        }

    return app


def warm_up(model: Model) -> None:
    """One call before the first request: builds what each runtime builds on its first call."""
    standard = model.standard
    model.probabilities(np.zeros((1, standard.height, standard.width, standard.channels), "uint8"))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="serve", description="Serve the trained model, or an export of it, over HTTP."
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"default {DEFAULT_HOST}")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    parser.add_argument(
        "--model",
        type=Path,
        help=f"train's folder or an export ({Layout().export}/model.onnx, a .tflite file, the "
        f"SavedModel folder); default: {Layout().model} of the project around the current folder",
    )
    parser.add_argument("--top-k", type=int, default=DEFAULT_TOP_K, help="labels per image")
    parser.add_argument(
        "--max-upload-mb",
        type=float,
        default=DEFAULT_MAX_UPLOAD_MB,
        help=f"largest request body (default {DEFAULT_MAX_UPLOAD_MB:g})",
    )
    parser.add_argument(
        "--max-files",
        type=int,
        default=DEFAULT_MAX_FILES,
        help=f"most files per request (default {DEFAULT_MAX_FILES})",
    )
    parser.add_argument("--access-log", action="store_true", help="log every request")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)

    def body() -> None:
        import uvicorn

        if not 1 <= args.top_k <= MAX_TOP_K:
            raise StageError(f"--top-k must be from 1 to {MAX_TOP_K}")
        if args.max_upload_mb <= 0 or args.max_files < 1:
            raise StageError("--max-upload-mb must be above 0 and --max-files at least 1")
        path = args.model or project_model_dir()
        model = runtimes.load(path)
        warm_up(model)
        limits = Limits(int(args.max_upload_mb * MB), args.max_files)
        app = create_app(model, args.top_k, limits, metrics_near(Path(path)))
        log.info(
            "serving the %s model %s (%d classes) on http://%s:%d",
            model.format,
            path,
            len(model.classes),
            args.host,
            args.port,
        )
        # log_config=None: uvicorn logs through the logging set up here, in the same format.
        uvicorn.run(
            app, host=args.host, port=args.port, log_config=None, access_log=args.access_log
        )

    run_main("serve", body)


if __name__ == "__main__":
    main()

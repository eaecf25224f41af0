"""predict on a folder of photo-sized JPEGs, against the per-image loop of the tutorials.

The plain way opens each file, converts and resizes it, and calls ``model.predict`` on a
batch of one. ``predict`` decodes in worker processes and calls the model once per batch.
A second row separates the two effects: the same batched ``predict`` with one process.
The model is an untrained ``three_conv`` at 64x64 RGB: its weights do not change the cost.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.corpus import make_corpus
from benchmarks.harness import Comparison, median, median_rates
from imgpipe.cli import worker_count
from imgpipe.images import Standard, decode, standardize

log = logging.getLogger("benchmarks.predict")

FULL_COUNT = 400
STANDARD = Standard(width=64, height=64, color="rgb", resample="lanczos")


def _save_model(model_dir: Path) -> None:
    from imgpipe.models import build_model

    model_dir.mkdir(parents=True)
    model = build_model("three_conv", (STANDARD.height, STANDARD.width, 3), 2)
    model.save(model_dir / "model.keras")
    (model_dir / "classes.json").write_text(json.dumps(["a", "b"]))
    (model_dir / "preprocessing.json").write_text(json.dumps(STANDARD.to_dict()))


def _per_image_loop(model, files: list[Path]) -> list[int]:
    """What the tutorials do: one file, one resize, one model call at a time."""
    labels = []
    for path in files:
        pixels = np.asarray(standardize(decode(path.read_bytes()), STANDARD))
        labels.append(int(np.argmax(model.predict(pixels[None], verbose=0)[0])))
    return labels


def run(scale: float, repeats: int) -> list[Comparison]:
    import keras

    from imgpipe import predict

    count = max(4, int(FULL_COUNT * scale))
    workers = worker_count(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_corpus(Path(tmp) / "photos", count, seed=0)
        model_dir = Path(tmp) / "model"
        _save_model(model_dir)
        model = keras.models.load_model(model_dir / "model.keras")
        files = sorted(folder.rglob("*.jpg"))
        log.info("predict benchmark: %d JPEGs, %d worker(s)", len(files), workers)

        def ours() -> None:
            predict.run([str(folder)], model_dir, 3, 256, workers)

        def ours_one_process() -> None:
            predict.run([str(folder)], model_dir, 3, 256, 1)

        def plain() -> None:
            _per_image_loop(model, files)

        rates = median_rates(
            {"ours": ours, "one_process": ours_one_process, "plain": plain}, len(files), repeats
        )
    return [
        Comparison(
            stage="predict",
            what=f"folder of {len(files)} JPEGs, {workers} proc",
            unit="img/s",
            ours=median(rates["ours"]),
            plain=median(rates["plain"]),
            plain_name="per-image loop: PIL resize + model.predict on 1 image",
            samples={"ours": rates["ours"], "plain": rates["plain"]},
        ),
        Comparison(
            stage="predict",
            what=f"decode in {workers} processes vs 1",
            unit="img/s",
            ours=median(rates["ours"]),
            plain=median(rates["one_process"]),
            plain_name="the same batched predict with --workers 1",
            samples={"ours": rates["ours"], "plain": rates["one_process"]},
        ),
    ]

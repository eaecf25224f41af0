"""Training input: the streaming tf.data pipeline against what a user would otherwise write.

- images/s of the same model fed by the shard stream vs from numpy arrays held in memory
  (the stream should cost almost nothing: goal at least 0.9);
- vs a per-batch Pillow loader in a Python loop as in the classic tutorials, which open and
  resize each original JPEG for every batch of every epoch (goal at least 3x); a second row
  runs the same loop over the already prepared images saved as PNG files, to show how much
  of the gain is the one-time ``prepare`` and how much the parallel input;
- peak memory (max RSS) of the train stage, each run in its own process, on a dataset ten
  times larger than the first (goal at most 1.3x).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.corpus import make_raw_dir
from benchmarks.harness import Comparison, median, time_call
from imgpipe.layout import Layout

log = logging.getLogger("benchmarks.train")

SIZE = (64, 64)  # width, height: a typical small-CNN input
BATCH = 64
CLASSES = ["a", "b"]
PILLOW_IMAGES = 512  # the Pillow loops are timed on a subset; rates are per image
# Epochs per timed fit() call: training runs many epochs in one call, so fit's fixed start-up
# cost (iterators, callbacks) is shared out as it is in real use, not charged to one epoch.
FIT_EPOCHS = 3
ROOT = Path(__file__).resolve().parent.parent


def _prepare(raw_dir: Path, work: Path) -> Path:
    """data/prepared, data/split and an empty data/augmented for the corpus, as dvc would."""
    from imgpipe.params import AugmentParams, PrepareParams, SplitParams
    from stages import augment, prepare, split

    project = work / "small"
    layout = replace(Layout.under(work), raw=raw_dir, prepared=project / "prepared")
    prepare.run(PrepareParams(size=SIZE, color="rgb", workers=0), layout)
    _split_and_augment(project, split, augment, SplitParams(), AugmentParams())
    return project


def _layout(project: Path) -> Layout:
    """The stage contract below ``project``, with the data folders directly in it."""
    return replace(
        Layout.under(project),
        prepared=project / "prepared",
        split=project / "split",
        augmented=project / "augmented",
    )


def _split_and_augment(project: Path, split, augment, split_params, augment_params) -> None:
    layout = _layout(project)
    split.run(split_params, 0, layout)
    augment.run(augment_params, 0, layout)


def _replicate(small: Path, work: Path, times: int) -> Path:
    """The same images ``times`` over under new ids: a dataset ``times`` larger."""
    from imgpipe.params import AugmentParams, SplitParams
    from imgpipe.shards import PackedImage, ShardWriter, read_images, read_manifest, write_manifest
    from stages import augment, split

    project = work / f"x{times}"
    prepared = project / "prepared"
    prepared.mkdir(parents=True)
    manifest = read_manifest(small / "prepared")
    images = dict(read_images(small / "prepared", manifest))
    rows = []
    with ShardWriter(prepared, shard_size=4096) as writer:
        for copy in range(times):
            for row in manifest.itertuples(index=False):
                new_id = f"{row.id}-{copy}"
                place = writer.add(PackedImage(new_id, images[row.id]))
                rows.append(
                    {**row._asdict(), "id": new_id, "group": f"{row.group}-{copy}", **place}
                )
    write_manifest(prepared, rows, list(manifest.columns))
    info = json.loads((small / "prepared" / "info.json").read_text())
    (prepared / "info.json").write_text(json.dumps({**info, "count": len(rows)}))
    _split_and_augment(project, split, augment, SplitParams(), AugmentParams())
    return project


def _model():
    import keras

    from imgpipe.models import build_model

    model = build_model("three_conv", (SIZE[1], SIZE[0], 3), len(CLASSES))
    model.compile(
        optimizer=keras.optimizers.Adam(0.001),
        loss=keras.losses.CategoricalCrossentropy(),
        metrics=["accuracy"],
    )
    return model


def _contenders(project: Path, raw_dir: Path, png_dir: Path):
    """name -> (one timed epoch, images it trains on)."""
    import tensorflow as tf
    from PIL import Image

    from imgpipe.dataset import sample_index, steps_per_epoch, training_batches
    from imgpipe.images import decode_png_array
    from imgpipe.shards import read_images, read_manifest, read_split

    prepared = read_manifest(project / "prepared")
    rows = prepared[prepared["id"].isin(read_split(project / "split", "train")["id"])]
    class_index = {name: i for i, name in enumerate(CLASSES)}
    index = sample_index([(project / "prepared", rows)], class_index)
    steps = steps_per_epoch(index, BATCH)
    model = _model()

    def stream():
        data = training_batches(index, 3, SIZE, BATCH, seed=0, first_epoch=0, epochs=FIT_EPOCHS)
        data = data.map(lambda x, y: (x, tf.one_hot(y, len(CLASSES))))
        model.fit(data, epochs=FIT_EPOCHS, steps_per_epoch=steps, shuffle=False, verbose=0)

    # Held in memory: what the stream must not be slower than.
    pixels = np.stack(
        [decode_png_array(data) for _, data in read_images(project / "prepared", rows)]
    )
    onehot = np.eye(len(CLASSES), dtype="float32")[index.label]

    def in_memory():
        model.fit(pixels, onehot, batch_size=BATCH, epochs=FIT_EPOCHS, shuffle=True, verbose=0)

    originals = {p.stem: p for p in (raw_dir / "images").rglob("*.jpg")}
    subset = rows.iloc[:PILLOW_IMAGES]
    labels = np.eye(len(CLASSES), dtype="float32")[subset["label"].map(class_index).to_numpy()]
    jpegs = [originals[Path(origin).stem] for origin in subset["origin"]]
    pngs = [png_dir / f"{image_id}.png" for image_id in subset["id"]]
    if not all(p.exists() for p in pngs):
        png_dir.mkdir(parents=True, exist_ok=True)
        for image_id, data in read_images(project / "prepared", subset):
            (png_dir / f"{image_id}.png").write_bytes(data)

    def pillow_loop(paths: list[Path], resize: bool):
        # The tutorials' loader: open, (resize,) to array, one batch at a time, then train.
        for start in range(0, len(paths), BATCH):
            batch = []
            for path in paths[start : start + BATCH]:
                with Image.open(path) as image:
                    image = image.convert("RGB")
                    if resize:
                        image = image.resize(SIZE, Image.Resampling.LANCZOS)
                    batch.append(np.asarray(image))
            model.train_on_batch(np.stack(batch), labels[start : start + BATCH])

    return {
        "stream": (stream, FIT_EPOCHS * len(index)),
        "in_memory": (in_memory, FIT_EPOCHS * len(index)),
        "pillow_jpeg": (lambda: pillow_loop(jpegs, resize=True), len(jpegs)),
        "pillow_png": (lambda: pillow_loop(pngs, resize=False), len(pngs)),
    }


def _rates(contenders: dict, repeats: int) -> dict[str, list[float]]:
    for fn, _ in contenders.values():  # warm-up: tracing, file cache
        fn()
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for round_ in range(repeats):
        # Rotated each round, so no contender always runs right after the same other one.
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            fn, work = contenders[name]
            rates[name].append(work / time_call(fn))
    return rates


def _paired(rates: dict[str, list[float]], ours: str, plain: str) -> list[float]:
    """The ratio within each round: on a shared machine, less swayed by load that comes and
    goes between rounds than the ratio of the medians."""
    return [round(a / b, 3) for a, b in zip(rates[ours], rates[plain], strict=True)]


_PEAK_SCRIPT = """
import json, resource, sys
from pathlib import Path
from imgpipe.params import TrainParams
from dataclasses import replace
from imgpipe.layout import Layout
from stages import train
project = Path(sys.argv[1])
layout = replace(Layout.under(project), prepared=project / "prepared",
                 split=project / "split", augmented=project / "augmented")
params = TrainParams(epochs=1, batch_size=%d, model="three_conv")
train.run(params, 0, layout)
print(json.dumps({"peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def train_stage_peak_mib(project: Path) -> float:
    """Max RSS of the train stage on ``project``, in a fresh process of its own."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT % BATCH, str(project)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"train stage failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_kib"] / 1024


def run(scale: float = 1.0, repeats: int = 3) -> list[Comparison]:
    count = max(40, int(2000 * scale))
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        work = Path(tmp)
        log.info("train: making %d photo-sized JPEGs and preparing them at %dx%d", count, *SIZE)
        raw_dir = make_raw_dir(work / "raw", count)
        small = _prepare(raw_dir, work)
        log.info("train: images/s of four ways to feed the same model")
        rates = _rates(_contenders(small, raw_dir, work / "png"), repeats)
        stream, in_memory = median(rates["stream"]), median(rates["in_memory"])
        rows = [
            Comparison(
                "train",
                "images/s, stream vs in-memory arrays",
                "img/s",
                stream,
                in_memory,
                f"the same model ({SIZE[0]}px) fed from numpy arrays held in memory",
                goal=0.9,
                samples={
                    "stream": rates["stream"],
                    "in_memory": rates["in_memory"],
                    "ratio_per_round": _paired(rates, "stream", "in_memory"),
                },
            ),
            Comparison(
                "train",
                "images/s, stream vs Pillow JPEG loop",
                "img/s",
                stream,
                median(rates["pillow_jpeg"]),
                "per-batch Pillow loader over the original JPEGs (open, resize, train_on_batch)",
                goal=3,
                samples={
                    "stream": rates["stream"],
                    "pillow": rates["pillow_jpeg"],
                    "ratio_per_round": _paired(rates, "stream", "pillow_jpeg"),
                },
            ),
            Comparison(
                "train",
                "images/s, stream vs Pillow PNG loop",
                "img/s",
                stream,
                median(rates["pillow_png"]),
                "the same Pillow loop over the prepared images as PNG files (no resize)",
                samples={
                    "stream": rates["stream"],
                    "pillow": rates["pillow_png"],
                    "ratio_per_round": _paired(rates, "stream", "pillow_png"),
                },
            ),
        ]
        log.info("train: peak memory of the stage on %d and %d images", count, 10 * count)
        large = _replicate(small, work, 10)
        peaks = {"x1": [], "x10": []}
        for _ in range(max(1, repeats // 2)):
            peaks["x1"].append(train_stage_peak_mib(small))
            peaks["x10"].append(train_stage_peak_mib(large))
        rows.append(
            Comparison(
                "train",
                "peak RSS, 10x images vs 1x",
                "MiB",
                median(peaks["x10"]),
                median(peaks["x1"]),
                f"the train stage on {count} images (ours: {10 * count}), one process each",
                higher_is_better=False,
                goal=round(1 / 1.3, 3),  # at most 1.3x the small run's peak
                samples=peaks,
            )
        )
    return rows

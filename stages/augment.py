"""augment: extra training samples made with Augmentor operations, from the train split only.

Validation and test images are never augmented, and never feed augmentation: augmenting
before splitting (as many tutorials do) puts rotated copies of test images into training and
inflates the test score.

The amount is either ``per_image`` samples from every training image, or ``per_class``: each
class filled up to that many training images (originals plus augmented), which balances the
classes. Each sample's random draws derive from (seed, sample index), so the output is the
same on every run and for any number of workers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from imgpipe import atomic
from imgpipe.augment_ops import Applied, BuiltOperation, augment_copies, build_class_operations
from imgpipe.augment_preview import PreviewRow, draw_preview
from imgpipe.cli import run_main, worker_count
from imgpipe.errors import StageError
from imgpipe.images import decode, encode_png
from imgpipe.parallel import ordered_map
from imgpipe.params import AugmentParams, load_params
from imgpipe.shards import (
    PackedImage,
    ShardWriter,
    read_images,
    read_manifest,
    read_split,
    write_manifest,
)

log = logging.getLogger("imgpipe.augment")

PREPARED_DIR = Path("data/prepared")
SPLIT_DIR = Path("data/split")
AUGMENTED_DIR = Path("data/augmented")
PREVIEW = Path("reports/augment_preview.png")
MANIFEST_COLUMNS = ["id", "label", "shard", "offset", "length", "origin", "seed", "operations"]
SHARD_SIZE = 4096
PREVIEW_SAMPLES = 6  # augmented samples shown beside each original
# zlib level of the samples' PNGs. Measured on 64x64 photo crops: about half the encoding time
# of level 6 for files about 1% larger; encoding was the largest cost of making a sample.
SAMPLE_PNG_LEVEL = 1
# Training images handed to the workers at a time: small, so that the shards are written
# while the workers make the next samples.
WINDOW = 32


def copies_per_origin(train: pd.DataFrame, per_image: int, per_class: int) -> pd.Series:
    """How many samples to make from each training image (indexed by id).

    For a target per class, the copies a class needs are spread evenly over its images (the
    first ones by id get one more when they do not divide), so no image is favoured.
    """
    copies = pd.Series(per_image, index=train["id"], dtype=int)
    if per_class:
        for _, ids in train.groupby("label", sort=True)["id"]:
            ordered = sorted(ids)
            needed = max(0, per_class - len(ordered))
            base, extra = divmod(needed, len(ordered))
            copies[ordered] = [base + (k < extra) for k in range(len(ordered))]
    return copies


@dataclass(frozen=True)
class Batch:
    """The samples made from one training image: indices ``first`` to ``first + copies - 1``."""

    origin: str
    label: str
    first: int
    copies: int


def plan_batches(origins: pd.DataFrame, copies: pd.Series) -> list[Batch]:
    """One batch per training image that gets samples, in the order ``origins`` come.

    Sample indices run on across batches, so they are fixed by the params and the data alone.
    Origins follow their order in the shards, so the stage reads each training image once, as
    a stream, and decodes it once for all its copies.
    """
    batches, first = [], 0
    for origin, label in zip(origins["id"], origins["label"], strict=True):
        count = int(copies[origin])
        if count:
            batches.append(Batch(origin, label, first, count))
            first += count
    return batches


def check_no_leak(split_dir: Path, train: pd.DataFrame) -> None:
    """Refuse to augment if a training image has a duplicate in val or test."""
    held_out = pd.concat([read_split(split_dir, name) for name in ("val", "test")])
    shared = sorted(set(train["group"]) & set(held_out["group"]))
    if shared:
        raise StageError(
            f"{len(shared)} duplicate group(s) sit in train and in val/test "
            f"(e.g. {', '.join(shared[:3])}); augmenting them would leak held-out images into "
            "training. Rerun the split stage (dvc repro split)."
        )


def training_origins(prepared_dir: Path, split_dir: Path) -> pd.DataFrame:
    """Manifest rows of the training split, in shard order."""
    train = read_split(split_dir, "train")
    check_no_leak(split_dir, train)
    manifest = read_manifest(prepared_dir)
    missing = sorted(set(train["id"]) - set(manifest["id"]))
    if missing:
        raise StageError(
            f"{len(missing)} training id(s) are not in {prepared_dir} (e.g. {missing[0]}); the "
            "split is older than the prepared data. Rerun the split stage (dvc repro split)."
        )
    rows = manifest[manifest["id"].isin(set(train["id"]))]
    return rows.sort_values(["shard", "offset"], kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class Made:
    png: bytes
    seed: int
    applied: list[Applied]


def _augment_batch(
    operations: dict[str, list[BuiltOperation]], seed: int, task: tuple[bytes, Batch]
) -> tuple[Batch, list[Made]]:
    data, batch = task
    indices = range(batch.first, batch.first + batch.copies)
    made = augment_copies(decode(data), operations[batch.label], seed, indices)
    return batch, [
        Made(encode_png(image, SAMPLE_PNG_LEVEL), own, applied) for image, own, applied in made
    ]


def _tasks(
    prepared_dir: Path, origins: pd.DataFrame, batches: list[Batch], keep: set[str], kept: dict
) -> Iterator[tuple[bytes, Batch]]:
    """(image bytes, batch) per batch; remembers the originals in ``keep`` for the preview."""
    needed = origins[origins["id"].isin({batch.origin for batch in batches})]
    for batch, (origin, data) in zip(batches, read_images(prepared_dir, needed), strict=True):
        if origin != batch.origin:  # read_images keeps shard order, as the plan does
            raise RuntimeError(f"read {origin} where {batch.origin} was planned")
        if origin in keep:
            kept[origin] = data
        yield data, batch


def _preview_origins(batches: list[Batch], count: int) -> list[str]:
    """Up to ``count`` origins, taking classes in turn so each class is shown."""
    seen: dict[str, int] = {}
    ranked = []
    for batch in batches:
        seen[batch.label] = seen.get(batch.label, 0) + 1
        ranked.append((seen[batch.label], batch.label, batch.origin))
    return [origin for *_, origin in sorted(ranked)[:count]]


def run(
    params: AugmentParams,
    seed: int,
    prepared_dir: Path,
    split_dir: Path,
    augmented_dir: Path,
    preview_path: Path | None = None,
) -> dict:
    origins = training_origins(prepared_dir, split_dir)
    classes = sorted(origins["label"].unique())
    operations = build_class_operations(params.operations, params.class_overrides, classes)
    amount = (params.per_image, params.per_class) if params.operations else (0, 0)
    batches = plan_batches(origins, copies_per_origin(origins, *amount))
    total = sum(batch.copies for batch in batches)
    workers = worker_count(params.workers)
    log.info(
        "making %d samples from %d training images with %d worker(s)",
        total,
        len(batches),
        workers,
    )
    shown = _preview_origins(batches, params.preview)
    originals: dict[str, bytes] = {}
    preview = {origin: [] for origin in shown}
    rows = []
    with atomic.atomic_dir(augmented_dir) as scratch, ShardWriter(scratch, SHARD_SIZE) as out:
        tasks = _tasks(prepared_dir, origins, batches, set(shown), originals)
        results = ordered_map(partial(_augment_batch, operations, seed), tasks, workers, WINDOW)
        progress = tqdm(total=total, desc="augment", unit="img", mininterval=1.0)
        for batch, made in results:
            for index, sample in enumerate(made, start=batch.first):
                sample_id = f"aug-{index:07d}"
                rows.append(
                    {
                        "id": sample_id,
                        "label": batch.label,
                        **out.add(PackedImage(sample_id, sample.png)),
                        "origin": batch.origin,
                        "seed": sample.seed,
                        "operations": json.dumps(
                            [a.to_dict() for a in sample.applied], separators=(",", ":")
                        ),
                    }
                )
            if batch.origin in preview:
                preview[batch.origin] = [
                    (s.png, [a.name for a in s.applied]) for s in made[:PREVIEW_SAMPLES]
                ]
            progress.update(len(made))
        progress.close()
        out.close()
        write_manifest(scratch, rows, MANIFEST_COLUMNS)
    if preview_path is not None:
        labels = {batch.origin: batch.label for batch in batches}
        grid = [PreviewRow(labels[o], o, originals[o], preview[o]) for o in shown]
        atomic.write_bytes(preview_path, draw_preview(grid))
    made = pd.Series([r["label"] for r in rows], dtype=str).value_counts()
    training = origins["label"].value_counts()
    summary = {
        "samples": len(rows),
        "per_class": {label: int(made.get(label, 0)) for label in classes},
        "training_per_class": {
            label: int(training[label] + made.get(label, 0)) for label in classes
        },
    }
    log.info("training images per class after augmenting: %s", summary["training_per_class"])
    return summary


def main() -> None:
    def body() -> None:
        params = load_params()
        run(params.augment, params.base.seed, PREPARED_DIR, SPLIT_DIR, AUGMENTED_DIR, PREVIEW)

    run_main("augment", body)


if __name__ == "__main__":
    main()

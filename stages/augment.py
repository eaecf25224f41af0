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

import hashlib
import json
import logging
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import Augmentor
import numpy as np
import pandas as pd
import PIL
from tqdm import tqdm

from imgpipe import atomic, augment_ops, images
from imgpipe.augment_ops import (
    Applied,
    BuiltOperation,
    augment_copies,
    build_class_operations,
    sample_seed,
)
from imgpipe.augment_preview import PreviewRow, draw_preview
from imgpipe.cli import run_main, worker_count
from imgpipe.content_cache import ContentCache, evict, fingerprint, resolve_dir
from imgpipe.errors import StageError
from imgpipe.images import STORED, decode, encode_png
from imgpipe.layout import Layout
from imgpipe.parallel import ordered_map
from imgpipe.params import AugmentParams, CacheParams, load_params
from imgpipe.shards import (
    AUGMENTED_COLUMNS,
    PackedImage,
    ShardWriter,
    read_images,
    read_manifest,
    read_split,
    write_manifest,
)

log = logging.getLogger("imgpipe.augment")

PREVIEW_SAMPLES = 6  # augmented samples shown beside each original
# The samples' PNGs are stored uncompressed, as prepare's are: on 64x64 photo crops zlib at
# level 1 took 0.3 ms a sample, the largest cost of making one; stored, 0.03 ms.
SAMPLE_PNG_LEVEL = STORED
# Training images handed to the workers at a time: small, so that the shards are written
# while the workers make the next samples.
WINDOW = 32


def copies_per_image(train: pd.DataFrame, per_image: int, per_class: int) -> pd.Series:
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

    parent: str
    label: str
    first: int
    copies: int


def plan_batches(train: pd.DataFrame, copies: pd.Series) -> list[Batch]:
    """One batch per training image that gets samples, in the order of ``train``'s rows.

    Sample indices run on across batches, so they are fixed by the params and the data alone.
    The rows follow their order in the shards, so the stage reads each training image once, as
    a stream, and decodes it once for all its copies.
    """
    batches, first = [], 0
    for parent, label in zip(train["id"], train["label"], strict=True):
        count = int(copies[parent])
        if count:
            batches.append(Batch(parent, label, first, count))
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


def training_rows(prepared_dir: Path, split_dir: Path) -> pd.DataFrame:
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
class Plan:
    """What the stage makes: the training images, their classes' operations, their batches."""

    train: pd.DataFrame  # manifest rows of the training split, in shard order
    classes: list[str]
    operations: dict[str, list[BuiltOperation]]
    batches: list[Batch]

    @property
    def samples(self) -> int:
        return sum(batch.copies for batch in self.batches)


def make_plan(params: AugmentParams, prepared_dir: Path, split_dir: Path) -> Plan:
    train = training_rows(prepared_dir, split_dir)
    classes = sorted(train["label"].unique())
    operations = build_class_operations(params.operations, params.class_overrides, classes)
    amount = (params.per_image, params.per_class) if params.operations else (0, 0)
    batches = plan_batches(train, copies_per_image(train, *amount))
    return Plan(train, classes, operations, batches)


@dataclass(frozen=True)
class Made:
    png: bytes
    seed: int
    applied: list[Applied]


def encode_made(made: Made) -> bytes:
    """A sample as the cache stores it: a line of JSON (its seed, what applied), the PNG."""
    applied = [[a.name, a.probability, a.draw] for a in made.applied]
    line = json.dumps({"seed": made.seed, "applied": applied}, separators=(",", ":"))
    return line.encode("utf-8") + b"\n" + made.png


def decode_made(payload: bytes) -> Made:
    line, _, png = payload.partition(b"\n")
    head = json.loads(line)
    return Made(png, head["seed"], [Applied(*entry) for entry in head["applied"]])


@dataclass(frozen=True)
class Maker:
    """What the workers need to make samples: the operations, the seed, the cache if any."""

    operations: dict[str, list[BuiltOperation]]
    seed: int
    cache: ContentCache | None = None
    # Per class, a hash of its operation list (names, probabilities, arguments): a sample is
    # reused only if made from the same image bytes by the same operations and seed.
    recipes: dict[str, str] = field(default_factory=dict)


def recipes_of(operations: dict[str, list[BuiltOperation]]) -> dict[str, str]:
    described = {
        label: json.dumps(
            [[op.name, op.probability, list(op.arguments)] for op in ops], default=str
        )
        for label, ops in operations.items()
    }
    return {label: hashlib.sha256(text.encode()).hexdigest() for label, text in described.items()}


def sample_key(image_hash: str, recipe: str, own_seed: int) -> str:
    return hashlib.sha256(f"{image_hash}:{recipe}:{own_seed}".encode()).hexdigest()


# A worker's answer: the batch, its samples, and the cache key of each sample made now.
Answer = tuple[Batch, list[Made], dict[int, str]]


def _augment_batch(maker: Maker, task: tuple[bytes, Batch]) -> Answer:
    data, batch = task
    indices = range(batch.first, batch.first + batch.copies)
    found: dict[int, Made] = {}
    keys: dict[int, str] = {}
    if maker.cache is not None:
        image_hash = hashlib.sha256(data).hexdigest()
        recipe = maker.recipes[batch.label]
        for index in indices:
            keys[index] = sample_key(image_hash, recipe, sample_seed(maker.seed, index))
            payload = maker.cache.get(keys[index])
            if payload is not None:
                found[index] = decode_made(payload)
    missing = [index for index in indices if index not in found]
    if missing:
        # Each sample depends on (seed, index) alone, so making only the missing ones gives
        # the bytes that making them all would.
        made = augment_copies(decode(data), maker.operations[batch.label], maker.seed, missing)
        for index, (image, own, applied) in zip(missing, made, strict=True):
            found[index] = Made(encode_png(image, SAMPLE_PNG_LEVEL), own, applied)
    new = {index: keys[index] for index in missing if index in keys}
    return batch, [found[index] for index in indices], new


def open_cache(settings: CacheParams) -> ContentCache | None:
    if settings.dir is None:
        return None
    versions = {
        "png_level": SAMPLE_PNG_LEVEL,
        "pillow": PIL.__version__,
        "numpy": np.__version__,
        "augmentor": getattr(Augmentor, "__version__", "unknown"),
    }
    modules = [augment_ops, images, sys.modules[__name__]]
    return ContentCache.open(resolve_dir(settings.dir), fingerprint(versions, modules))


def _preview_parents(batches: list[Batch], count: int) -> list[str]:
    """Up to ``count`` training images, taking classes in turn so each class is shown."""
    seen: dict[str, int] = {}
    ranked = []
    for batch in batches:
        seen[batch.label] = seen.get(batch.label, 0) + 1
        ranked.append((seen[batch.label], batch.label, batch.parent))
    return [parent for *_, parent in sorted(ranked)[:count]]


@dataclass
class Preview:
    """Collects, while the stage runs, the originals it shows and their first samples."""

    shown: list[str]
    rows: dict[str, PreviewRow] = field(default_factory=dict)

    def keep_original(self, batch: Batch, data: bytes) -> None:
        if batch.parent in self.shown:
            self.rows[batch.parent] = PreviewRow(batch.label, batch.parent, data)

    def keep_samples(self, batch: Batch, made: list[Made]) -> None:
        if batch.parent in self.rows:
            self.rows[batch.parent].samples = [
                (sample.png, [a.name for a in sample.applied]) for sample in made[:PREVIEW_SAMPLES]
            ]

    def png(self) -> bytes:
        return draw_preview([self.rows[parent] for parent in self.shown])


def _tasks(prepared_dir: Path, plan: Plan, preview: Preview) -> Iterator[tuple[bytes, Batch]]:
    """(image bytes, batch) per batch, read from the shards in the order of the plan."""
    needed = plan.train[plan.train["id"].isin({batch.parent for batch in plan.batches})]
    pairs = zip(plan.batches, read_images(prepared_dir, needed), strict=True)
    for batch, (parent, data) in pairs:
        if parent != batch.parent:  # read_images keeps shard order, as the plan does
            raise RuntimeError(f"read {parent} where {batch.parent} was planned")
        preview.keep_original(batch, data)
        yield data, batch


def _sample_row(sample_id: str, batch: Batch, sample: Made, place: dict[str, object]) -> dict:
    return {
        "id": sample_id,
        "label": batch.label,
        **place,
        "parent": batch.parent,
        "seed": sample.seed,
        "operations": json.dumps([a.to_dict() for a in sample.applied], separators=(",", ":")),
    }


def _pack(
    results: Iterable[Answer],
    out: ShardWriter,
    total: int,
    preview: Preview,
    cache: ContentCache | None = None,
) -> list[dict]:
    """Write each sample into the shards as it comes; return the manifest rows."""
    rows = []
    with tqdm(total=total, desc="augment", unit="img", mininterval=1.0) as progress:
        for batch, made, new in results:
            for index, sample in enumerate(made, start=batch.first):
                sample_id = f"aug-{index:07d}"
                place = out.add(PackedImage(sample_id, sample.png))
                rows.append(_sample_row(sample_id, batch, sample, place))
                if cache is not None and index in new:
                    cache.put(new[index], encode_made(sample))
            preview.keep_samples(batch, made)
            progress.update(len(made))
    return rows


def write_samples(
    params: AugmentParams, seed: int, plan: Plan, layout: Layout, preview: Preview
) -> list[dict]:
    """Make every planned sample in worker processes; write shards and manifest atomically."""
    workers = worker_count(params.workers)
    log.info(
        "making %d samples from %d training images with %d worker(s)",
        plan.samples,
        len(plan.batches),
        workers,
    )
    cache = open_cache(params.cache)
    maker = Maker(plan.operations, seed, cache, recipes_of(plan.operations) if cache else {})
    make = partial(_augment_batch, maker)
    with (
        atomic.atomic_dir(layout.augmented) as scratch,
        ShardWriter(scratch, params.shard_size) as out,
    ):
        tasks = _tasks(layout.prepared, plan, preview)
        answers = ordered_map(make, tasks, workers, WINDOW)
        rows = _pack(answers, out, plan.samples, preview, cache)
        out.close()
        write_manifest(scratch, rows, AUGMENTED_COLUMNS)
    if cache is not None:
        _close_cache(cache, params.cache, plan.samples)
    return rows


def _close_cache(cache: ContentCache, settings: CacheParams, samples: int) -> None:
    cache.commit()
    if cache.added:
        evict(cache.root, settings.max_bytes)
    log.info(
        "cache %s: %d sample(s) reused, %d made",
        cache.directory,
        samples - cache.added,
        cache.added,
    )


def summarize(rows: list[dict], plan: Plan) -> dict:
    made = pd.Series([row["label"] for row in rows], dtype=str).value_counts()
    training = plan.train["label"].value_counts()
    return {
        "samples": len(rows),
        "per_class": {label: int(made.get(label, 0)) for label in plan.classes},
        "training_per_class": {
            label: int(training[label] + made.get(label, 0)) for label in plan.classes
        },
    }


def run(params: AugmentParams, seed: int, layout: Layout) -> dict:
    plan = make_plan(params, layout.prepared, layout.split)
    preview = Preview(_preview_parents(plan.batches, params.preview))
    rows = write_samples(params, seed, plan, layout, preview)
    atomic.write_bytes(layout.augment_preview, preview.png())
    summary = summarize(rows, plan)
    log.info("training images per class after augmenting: %s", summary["training_per_class"])
    return summary


def main() -> None:
    def body() -> None:
        params = load_params()
        run(params.augment, params.base.seed, Layout())

    run_main("augment", body)


if __name__ == "__main__":
    main()

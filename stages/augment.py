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
from functools import partial
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from imgpipe import atomic
from imgpipe.augment_ops import BuiltOperation, augment_image, build_class_operations, sample_seed
from imgpipe.augment_preview import PreviewRow, draw_preview
from imgpipe.cli import StageError, run_main, worker_count
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


def plan_samples(origins: pd.DataFrame, copies: pd.Series) -> pd.DataFrame:
    """One row per augmented sample (index, label, origin), in the order ``origins`` come.

    Copies of one image are consecutive and origins follow their order in the shards, so the
    stage reads each training image once, as a stream.
    """
    rows = [
        (label, origin)
        for origin, label in zip(origins["id"], origins["label"], strict=True)
        for _ in range(int(copies[origin]))
    ]
    plan = pd.DataFrame(rows, columns=["label", "origin"])
    plan.insert(0, "index", range(len(plan)))
    return plan


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


def _augment_one(
    operations: dict[str, list[BuiltOperation]], seed: int, task: tuple[bytes, str, int]
) -> tuple[int, bytes, list[dict]]:
    data, label, index = task
    image, applied = augment_image(decode(data), operations[label], seed, index)
    return index, encode_png(image), [a.to_dict() for a in applied]


def _tasks(
    prepared_dir: Path, origins: pd.DataFrame, plan: pd.DataFrame, keep: set[str], kept: dict
) -> Iterator[tuple[bytes, str, int]]:
    """(image bytes, label, sample index) per planned sample; remembers the ``keep`` originals."""
    by_origin = plan.groupby("origin", sort=False)
    needed = origins[origins["id"].isin(set(plan["origin"]))]
    for origin, data in read_images(prepared_dir, needed):
        if origin in keep:
            kept[origin] = data
        for row in by_origin.get_group(origin).itertuples(index=False):
            yield data, row.label, row.index


def _preview_origins(plan: pd.DataFrame, count: int) -> list[str]:
    """Up to ``count`` origins, taking classes in turn so each class is shown."""
    firsts = plan.drop_duplicates("origin")
    ranked = firsts.assign(rank=firsts.groupby("label").cumcount())
    return ranked.sort_values(["rank", "label", "origin"])["origin"].head(count).tolist()


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
    plan = plan_samples(origins, copies_per_origin(origins, *amount))
    workers = worker_count(params.workers)
    log.info(
        "making %d samples from %d training images with %d worker(s)",
        len(plan),
        plan["origin"].nunique(),
        workers,
    )
    shown = _preview_origins(plan, params.preview)
    originals: dict[str, bytes] = {}
    samples: dict[str, list[tuple[bytes, list[str]]]] = {origin: [] for origin in shown}
    rows = []
    with atomic.atomic_dir(augmented_dir) as scratch, ShardWriter(scratch, SHARD_SIZE) as out:
        tasks = _tasks(prepared_dir, origins, plan, set(shown), originals)
        results = ordered_map(partial(_augment_one, operations, seed), tasks, workers)
        for row, (index, png, applied) in tqdm(
            zip(plan.itertuples(index=False), results, strict=True),
            total=len(plan),
            desc="augment",
            unit="img",
            mininterval=1.0,
        ):
            if index != row.index:  # the shards must be read in plan order; never expected
                raise RuntimeError(f"sample {index} arrived where {row.index} was planned")
            sample = f"aug-{row.index:07d}"
            place = out.add(PackedImage(sample, png))
            rows.append(
                {
                    "id": sample,
                    "label": row.label,
                    **place,
                    "origin": row.origin,
                    "seed": sample_seed(seed, row.index),
                    "operations": json.dumps(applied, separators=(",", ":")),
                }
            )
            if row.origin in samples and len(samples[row.origin]) < PREVIEW_SAMPLES:
                samples[row.origin].append((png, [a["name"] for a in applied]))
        out.close()
        write_manifest(scratch, rows, MANIFEST_COLUMNS)
    if preview_path is not None:
        labels = dict(zip(plan["origin"], plan["label"], strict=False))
        preview = [PreviewRow(labels[o], o, originals[o], samples[o]) for o in shown]
        atomic.write_bytes(preview_path, draw_preview(preview))
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

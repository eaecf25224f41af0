"""augment: extra training samples made with Augmentor operations, from the train split only.

Validation and test images are never augmented, and never feed augmentation: augmenting
before splitting (as many tutorials do) puts rotated copies of test images into training and
inflates the test score.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pandas as pd
from PIL import Image
from tqdm import tqdm

from imgpipe import atomic
from imgpipe.augment_ops import BuiltOperation, augment_image, build_operations
from imgpipe.cli import run_main, worker_count
from imgpipe.images import encode_png
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
MANIFEST_COLUMNS = ["id", "label", "shard", "offset", "length", "origin", "operations"]


def plan_samples(train: pd.DataFrame, per_class: int) -> pd.DataFrame:
    """Which training image each augmented sample starts from: classes in turn, origins cycled."""
    rows = []
    for label, group in train.sort_values("id").groupby("label", sort=True):
        origins = group["id"].tolist()
        rows.extend({"label": label, "origin": origins[k % len(origins)]} for k in range(per_class))
    plan = pd.DataFrame(rows, columns=["label", "origin"])
    plan.insert(0, "index", range(len(plan)))
    return plan


def _augment_one(task: tuple[bytes, list[BuiltOperation], int, int]) -> tuple[bytes, list[str]]:
    data, operations, seed, index = task
    image, applied = augment_image(Image.open(io.BytesIO(data)), operations, seed, index)
    return encode_png(image), applied


def run(
    params: AugmentParams, seed: int, prepared_dir: Path, split_dir: Path, augmented_dir: Path
) -> dict:
    operations = build_operations(params.operations)
    train = read_split(split_dir, "train")
    plan = plan_samples(train, params.per_class if operations else 0)
    manifest = read_manifest(prepared_dir)
    origins = manifest[manifest["id"].isin(set(plan["origin"]))]
    # The distinct origins are a subset of the training split; their encoded bytes are small.
    origin_bytes = dict(read_images(prepared_dir, origins))
    tasks = (
        (origin_bytes[row.origin], operations, seed, row.index)
        for row in plan.itertuples(index=False)
    )
    workers = worker_count(params.workers)
    log.info(
        "making %d samples from %d training images with %d worker(s)",
        len(plan),
        len(origins),
        workers,
    )
    rows = []
    with atomic.atomic_dir(augmented_dir) as scratch, ShardWriter(scratch, 4096) as out:
        results = ordered_map(_augment_one, tasks, workers)
        for row, (png, applied) in tqdm(
            zip(plan.itertuples(index=False), results, strict=False),
            total=len(plan),
            desc="augment",
            unit="img",
            mininterval=1.0,
        ):
            sample = f"aug-{row.index:07d}"
            place = out.add(PackedImage(sample, png))
            rows.append(
                {
                    "id": sample,
                    "label": row.label,
                    **place,
                    "origin": row.origin,
                    "operations": ";".join(applied),
                }
            )
        out.close()
        write_manifest(scratch, rows, MANIFEST_COLUMNS)
    per_class = pd.Series([r["label"] for r in rows], dtype=str).value_counts().sort_index()
    return {"samples": len(rows), "per_class": per_class.to_dict()}


def main() -> None:
    def body() -> None:
        params = load_params()
        run(params.augment, params.base.seed, PREPARED_DIR, SPLIT_DIR, AUGMENTED_DIR)

    run_main("augment", body)


if __name__ == "__main__":
    main()

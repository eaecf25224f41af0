"""split: stratified, seeded train / val / test manifests; no image is copied.

Splitting happens on duplicate groups, not on single images, so two copies of one picture
can never sit on both sides of the train / test line.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from imgpipe import atomic
from imgpipe.cli import StageError, run_main
from imgpipe.params import SplitParams, load_params
from imgpipe.shards import read_manifest

log = logging.getLogger("imgpipe.split")

PREPARED_DIR = Path("data/prepared")
SPLIT_DIR = Path("data/split")
SPLIT_NAMES = ("train", "val", "test")
SPLIT_COLUMNS = ["id", "label", "group"]


def _check_splittable(groups: pd.DataFrame, params: SplitParams) -> None:
    # Each class needs a group for each of the three splits, and enough that the smallest
    # fraction still rounds to one.
    needed = max(3, int(-(-1 // min(params.val, params.test, 1 - params.val - params.test))))
    sizes = groups["label"].value_counts()
    small = sizes[sizes < needed]
    if not small.empty:
        listing = ", ".join(f"{label!r} has {n}" for label, n in sorted(small.items()))
        raise StageError(
            f"too few distinct images to split: {listing}; each class needs at least {needed} "
            f"for val={params.val} and test={params.test}. Add images, or raise the fractions."
        )


def assign_splits(manifest: pd.DataFrame, params: SplitParams, seed: int) -> pd.Series:
    """The split name of each manifest row, decided per duplicate group."""
    groups = manifest.drop_duplicates("group")[["group", "label"]].sort_values("group")
    _check_splittable(groups, params)
    rest, test = train_test_split(
        groups, test_size=params.test, stratify=groups["label"], random_state=seed
    )
    train, val = train_test_split(
        rest, test_size=params.val / (1 - params.test), stratify=rest["label"], random_state=seed
    )
    names = {}
    for name, part in (("train", train), ("val", val), ("test", test)):
        names.update(dict.fromkeys(part["group"], name))
    return manifest["group"].map(names)


def run(params: SplitParams, seed: int, prepared_dir: Path, split_dir: Path) -> dict:
    manifest = read_manifest(prepared_dir)
    splits = assign_splits(manifest, params, seed)
    summary = {}
    with atomic.atomic_dir(split_dir) as scratch:
        for name in SPLIT_NAMES:
            rows = manifest.loc[splits == name, SPLIT_COLUMNS].sort_values("id")
            rows.to_csv(scratch / f"{name}.csv", index=False, lineterminator="\n")
            summary[name] = {
                "images": len(rows),
                "per_class": rows["label"].value_counts().sort_index().to_dict(),
            }
    log.info("train %d, val %d, test %d images", *(summary[n]["images"] for n in SPLIT_NAMES))
    return summary


def main() -> None:
    def body() -> None:
        params = load_params()
        run(params.split, params.base.seed, PREPARED_DIR, SPLIT_DIR)

    run_main("split", body)


if __name__ == "__main__":
    main()

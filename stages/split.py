"""split: stratified, seeded train / val / test manifests; no image is copied.

Splitting happens on duplicate groups, not on single images, so two copies of one picture
can never sit on both sides of the train / test line.

A source that brings its own test set (CIFAR-10's test batch, a ``test/`` folder) marks its
images in the prepared manifest's ``source_split`` column (``train`` / ``val`` / ``test``; empty
when the source has no split of its own). With ``split.keep_source_test`` that test set is the
test split, and the rest is split into train and val; with ``split.keep_source_val`` the
source's val set (a ``val/`` folder), if it has one, is the val split.
"""

from __future__ import annotations

import logging
import math

import pandas as pd
from sklearn.model_selection import train_test_split

from imgpipe import atomic
from imgpipe.cli import run_main
from imgpipe.errors import StageError
from imgpipe.layout import Layout
from imgpipe.params import SplitParams, load_params
from imgpipe.shards import SOURCE_SPLIT, read_manifest

log = logging.getLogger("imgpipe.split")

SPLIT_NAMES = ("train", "val", "test")
SPLIT_COLUMNS = ["id", "label", "group"]


def _check_splittable(groups: pd.DataFrame, fractions: dict[str, float]) -> None:
    # Each class needs a group for each split it is cut into, and enough that the smallest
    # fraction still rounds to one.
    smallest = min(*fractions.values(), 1 - sum(fractions.values()))
    needed = max(len(fractions) + 1, math.ceil(1 / smallest - 1e-9))
    sizes = groups["label"].value_counts()
    small = sizes[sizes < needed]
    if not small.empty:
        listing = ", ".join(f"{label!r} has {n}" for label, n in sorted(small.items()))
        asked = " and ".join(f"{name}={value}" for name, value in fractions.items())
        raise StageError(
            f"too few distinct images to split: {listing}; each class needs at least {needed} "
            f"for {asked} (copies of one image count once). Add images to those classes, or "
            "raise the fractions."
        )


def _stratified(groups: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, ...]:
    try:
        return tuple(
            train_test_split(
                groups, test_size=fraction, stratify=groups["label"], random_state=seed
            )
        )
    except ValueError as err:  # the size checks above make this rare: many tiny classes
        raise StageError(f"cannot split the classes in proportion: {err}") from None


def _group_table(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per duplicate group, with its label, in a fixed order."""
    return manifest.drop_duplicates("group")[["group", "label"]].sort_values("group")


def _marked(manifest: pd.DataFrame, split: str) -> pd.Series:
    if SOURCE_SPLIT not in manifest.columns:
        return pd.Series(False, index=manifest.index)
    return manifest[SOURCE_SPLIT].fillna("").astype(str) == split


def source_test_groups(manifest: pd.DataFrame) -> set[str]:
    """Groups with any image in the source's own test set; the whole group goes to test."""
    marked = _marked(manifest, "test")
    if not marked.any():
        raise StageError(
            "split.keep_source_test is true, but the source has no test set of its own (no "
            f"row of the prepared manifest.csv has {SOURCE_SPLIT} 'test'). Set "
            "split.keep_source_test: false to cut a test split from the images instead."
        )
    return set(manifest.loc[marked, "group"])


def source_val_groups(manifest: pd.DataFrame, taken: set[str]) -> set[str] | None:
    """Groups with an image in the source's own val set (and none in ``taken``), or None."""
    marked = _marked(manifest, "val")
    if not marked.any():
        log.info("split.keep_source_val: the source has no val set of its own; val is cut")
        return None
    return set(manifest.loc[marked, "group"]) - taken


def assign_splits(manifest: pd.DataFrame, params: SplitParams, seed: int) -> pd.Series:
    """The split name of each manifest row, decided per duplicate group."""
    test_groups = source_test_groups(manifest) if params.keep_source_test else None
    val_groups = (
        source_val_groups(manifest, test_groups or set()) if params.keep_source_val else None
    )
    kept = (test_groups or set()) | (val_groups or set())
    rest = _group_table(manifest[~manifest["group"].isin(kept)])
    to_cut = {}
    if val_groups is None:
        to_cut["val"] = params.val
    if test_groups is None:
        to_cut["test"] = params.test
    if to_cut:
        _check_splittable(rest, to_cut)
    if test_groups is None:
        rest, test = _stratified(rest, params.test, seed)
        val_fraction = params.val / (1 - params.test)
    else:
        test = _group_table(manifest[manifest["group"].isin(test_groups)])
        val_fraction = params.val
    if val_groups is None:
        train, val = _stratified(rest, val_fraction, seed)
    else:
        train, val = rest, _group_table(manifest[manifest["group"].isin(val_groups)])
    names = {}
    for name, part in (("train", train), ("val", val), ("test", test)):
        names.update(dict.fromkeys(part["group"], name))
    return manifest["group"].map(names)


def run(params: SplitParams, seed: int, layout: Layout) -> dict:
    """Write ``layout.split``'s manifests from ``layout.prepared``'s."""
    manifest = read_manifest(layout.prepared)
    splits = assign_splits(manifest, params, seed)
    summary = {}
    with atomic.atomic_dir(layout.split) as scratch:
        for name in SPLIT_NAMES:
            rows = manifest.loc[splits == name, SPLIT_COLUMNS].sort_values("id")
            rows.to_csv(scratch / f"{name}.csv", index=False, lineterminator="\n")
            summary[name] = {
                "images": len(rows),
                "per_class": rows["label"].value_counts().sort_index().to_dict(),
            }
    log.info("train %d, val %d, test %d images", *(summary[n]["images"] for n in SPLIT_NAMES))
    if params.keep_source_test:
        summary["moved_to_test"] = _report_source_test(manifest, splits)
    return summary


def _report_source_test(manifest: pd.DataFrame, splits: pd.Series) -> int:
    """Log what keeping the source's test set did; return how many images it moved to test."""
    log.info("test split: the source's own test set (split.test is not used)")
    moved = int(((manifest[SOURCE_SPLIT] != "test") & (splits == "test")).sum())
    if moved:
        log.info("%d image(s) outside the source's test set copy a test image: in test", moved)
    missing = sorted(set(manifest["label"]) - set(manifest.loc[splits == "test", "label"]))
    if missing:
        log.warning("the source's test set has no image of %s", ", ".join(missing))
    return moved


def main() -> None:
    def body() -> None:
        params = load_params()
        run(params.split, params.base.seed, Layout())

    run_main("split", body)


if __name__ == "__main__":
    main()

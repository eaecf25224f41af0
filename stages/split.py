"""split: stratified, seeded train / val / test manifests; no image is copied.

Splitting happens on duplicate groups, not on single images, so two copies of one picture
can never sit on both sides of the train / test line.

A source that brings its own test set (CIFAR-10's test batch, a ``test/`` folder) marks its
images in the prepared manifest's ``source_split`` column (``train`` / ``val`` / ``test``; empty
when the source has no split of its own). With ``split.keep_source_test`` that test set is the
test split, and the rest is split into train and val; with ``split.keep_source_val`` the
source's val set (a ``val/`` folder), if it has one, is the val split.

Groups a source names (a table's group column, in the prepared manifest's ``source_group``)
join the exact-duplicate groups of their images, so one patient or one recording is split as
a whole.

Near duplicates (perceptual hashes within ``split.near_duplicate_distance`` bits, see
``imgpipe.near_duplicates``) join their exact-duplicate groups into one group that is split
as a whole. A source's own test (or val) set cannot be regrouped, so near duplicates across
it are listed instead, in ``leakage.json`` and ``cross_split_pairs.csv``, and pictured; with
``split.drop_train_near_duplicates`` their training copies are left out, and listed.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from imgpipe import atomic
from imgpipe.cli import run_main
from imgpipe.errors import StageError
from imgpipe.layout import LEAKAGE, Layout
from imgpipe.near_duplicates import (
    LEAKAGE_COUNT,
    LEAKAGE_FRACTION,
    from_hex,
    near_pairs,
    union_groups,
)
from imgpipe.params import SplitParams, load_params
from imgpipe.preview_grid import contact_sheet
from imgpipe.shards import PHASH, SOURCE_GROUP, SOURCE_SPLIT, read_images, read_manifest

log = logging.getLogger("imgpipe.split")

SPLIT_NAMES = ("train", "val", "test")
SPLIT_COLUMNS = ["id", "label", "group"]
PAIRS_FILE = "cross_split_pairs.csv"
PAIRS_SHOWN = 24  # closest cross-split pairs in the picture


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
            f"for {asked} (copies of one image, and the images of one source group, count "
            "once). Add images to those classes, or raise the fractions."
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


def with_source_groups(manifest: pd.DataFrame) -> pd.Series:
    """Exact-duplicate groups joined where the source puts images in one group (a table's
    group column: one patient, one recording), named after their first exact group."""
    if SOURCE_GROUP not in manifest.columns:
        return manifest["group"]
    named = manifest[SOURCE_GROUP].fillna("").astype(str).to_numpy()
    codes, names = pd.factorize(manifest["group"], sort=True)
    rows = np.flatnonzero(named != "")
    members = pd.DataFrame({"code": codes[rows], "named": named[rows]})
    first = members.groupby("named")["code"].transform("min").to_numpy()
    roots = union_groups(len(names), first, members["code"].to_numpy())
    return pd.Series(np.asarray(names)[roots[codes]], index=manifest.index)


def find_near_pairs(manifest: pd.DataFrame, distance: int | None) -> pd.DataFrame:
    """Row positions (first, second) of near-duplicate pairs of distinct images, with distance.

    Pairs of one exact group are left out: they are together already.
    """
    empty = pd.DataFrame({"first": [], "second": [], "distance": []}, dtype=np.int64)
    if distance is None:
        return empty
    if PHASH not in manifest.columns:
        log.warning("the prepared manifest has no %s column: rerun prepare", PHASH)
        return empty
    pairs = near_pairs(from_hex(manifest[PHASH]), distance)
    frame = pd.DataFrame({"first": pairs.first, "second": pairs.second, "distance": pairs.distance})
    groups = manifest["group"].to_numpy()
    return frame[groups[frame["first"]] != groups[frame["second"]]].reset_index(drop=True)


def fixed_sides(manifest: pd.DataFrame, params: SplitParams) -> pd.Series:
    """Per row: 'test' or 'val' where the source's own set holds its group, else ''."""
    side = pd.Series("", index=manifest.index)
    test_groups = source_test_groups(manifest) if params.keep_source_test else set()
    side[manifest["group"].isin(test_groups)] = "test"
    if params.keep_source_val:
        val_groups = source_val_groups(manifest, test_groups) or set()
        side[manifest["group"].isin(val_groups)] = "val"
    return side


def joined_groups(manifest: pd.DataFrame, pairs: pd.DataFrame, sides: pd.Series) -> pd.Series:
    """Exact groups joined through near pairs, except pairs across a source's fixed set.

    The joined group is named after its first exact group in sorted order, so names do not
    depend on the order of rows or pairs.
    """
    codes, names = pd.factorize(manifest["group"], sort=True)
    side = sides.to_numpy()
    first, second = pairs["first"].to_numpy(), pairs["second"].to_numpy()
    same_side = side[first] == side[second]
    roots = union_groups(len(names), codes[first[same_side]], codes[second[same_side]])
    return pd.Series(np.asarray(names)[roots[codes]], index=manifest.index)


def cross_split_pairs(
    manifest: pd.DataFrame, splits: pd.Series, pairs: pd.DataFrame
) -> pd.DataFrame:
    """Near pairs whose images sit in two splits, the held-out image first, closest first."""
    rank = {"test": 0, "val": 1, "train": 2}
    split = splits.to_numpy()
    a, b = pairs["first"].to_numpy(), pairs["second"].to_numpy()
    across = split[a] != split[b]
    a, b, d = a[across], b[across], pairs["distance"].to_numpy()[across]
    swap = np.array([rank[x] for x in split[a]], dtype=int) > np.array(
        [rank[x] for x in split[b]], dtype=int
    )
    a, b = np.where(swap, b, a), np.where(swap, a, b)
    columns = {"distance": d}
    for side, rows in (("a", a), ("b", b)):
        columns[f"split_{side}"] = split[rows]
        for name in ("id", "label", "origin"):
            columns[f"{name}_{side}"] = manifest[name].to_numpy()[rows]
    frame = pd.DataFrame(columns, columns=list(columns))
    return frame.sort_values(["distance", "id_a", "id_b"]).reset_index(drop=True)


def training_copies(cross: pd.DataFrame) -> pd.DataFrame:
    """Training images with a near duplicate in val or test (one row each)."""
    held_out = cross[cross["split_b"] == "train"]
    rows = held_out[["id_b", "label_b", "origin_b"]].drop_duplicates("id_b")
    rows.columns = ["id", "label", "origin"]
    return rows.sort_values("id").reset_index(drop=True)


def leakage_figures(splits: pd.Series, cross: pd.DataFrame, distance: int | None) -> dict:
    """How many test images have a near duplicate in train, as split writes them."""
    tested = int((splits == "test").sum())
    train_test = cross[(cross["split_a"] == "test") & (cross["split_b"] == "train")]
    leaked = int(train_test["id_a"].nunique())
    return {
        "near_duplicate_distance": distance,
        "test_images": tested,
        # None: not measured (no near-duplicate search), not "no leakage".
        LEAKAGE_COUNT: None if distance is None else leaked,
        LEAKAGE_FRACTION: (
            None if distance is None else round(leaked / tested, 6) if tested else 0.0
        ),
        "cross_split_pairs": {
            f"{a}-{b}": int(((cross["split_a"] == a) & (cross["split_b"] == b)).sum())
            for a, b in (("test", "train"), ("val", "train"), ("test", "val"))
        },
    }


def pairs_picture(prepared: Path, manifest: pd.DataFrame, cross: pd.DataFrame) -> bytes:
    """The closest cross-split pairs, one per row: the held-out image, then its copy."""
    shown = cross.head(PAIRS_SHOWN)
    wanted = manifest[manifest["id"].isin(set(shown["id_a"]) | set(shown["id_b"]))]
    images = dict(read_images(prepared, wanted))
    rows = [
        (f"{r.distance} {r.split_a}/{r.split_b}", [images[r.id_a], images[r.id_b]])
        for r in shown.itertuples(index=False)
    ]
    return contact_sheet(rows or [("no pairs", [])], 2)


def run(params: SplitParams, seed: int, layout: Layout) -> dict:
    """Write ``layout.split``'s manifests from ``layout.prepared``'s."""
    manifest = read_manifest(layout.prepared)
    manifest = manifest.assign(group=with_source_groups(manifest))
    pairs = find_near_pairs(manifest, params.near_duplicate_distance)
    manifest = manifest.assign(group=joined_groups(manifest, pairs, fixed_sides(manifest, params)))
    splits = assign_splits(manifest, params, seed)
    cross = cross_split_pairs(manifest, splits, pairs)
    # Nothing is dropped unless asked; the empty table keeps one shape for the report.
    dropped = training_copies(cross if params.drop_train_near_duplicates else cross.iloc[:0])
    if len(dropped):
        splits = splits.mask(manifest["id"].isin(dropped["id"]), "dropped")
        cross = cross[~cross["id_b"].isin(dropped["id"])].reset_index(drop=True)
    leakage = leakage_figures(splits, cross, params.near_duplicate_distance)
    leakage["near_pairs"] = len(pairs)
    leakage["dropped_from_train"] = dropped.to_dict("records")
    summary = {}
    with atomic.atomic_dir(layout.split) as scratch:
        for name in SPLIT_NAMES:
            rows = manifest.loc[splits == name, SPLIT_COLUMNS].sort_values("id")
            rows.to_csv(scratch / f"{name}.csv", index=False, lineterminator="\n")
            summary[name] = {
                "images": len(rows),
                "per_class": rows["label"].value_counts().sort_index().to_dict(),
            }
        cross.to_csv(scratch / PAIRS_FILE, index=False, lineterminator="\n")
        atomic.write_json(scratch / LEAKAGE, leakage)
    atomic.write_bytes(layout.split_pairs_image, pairs_picture(layout.prepared, manifest, cross))
    log.info("train %d, val %d, test %d images", *(summary[n]["images"] for n in SPLIT_NAMES))
    _log_leakage(leakage, len(dropped))
    if params.keep_source_test:
        summary["moved_to_test"] = _report_source_test(manifest, splits)
    summary["leakage"] = leakage
    return summary


def _log_leakage(leakage: dict, dropped: int) -> None:
    if leakage["near_duplicate_distance"] is None:
        log.info("near duplicates: not searched (split.near_duplicate_distance is null)")
        return
    log.info(
        "%d near-duplicate pair(s) within %d bits; test images with a near duplicate in "
        "train: %d (%.2f%%)",
        leakage["near_pairs"],
        leakage["near_duplicate_distance"],
        leakage[LEAKAGE_COUNT],
        100 * leakage[LEAKAGE_FRACTION],
    )
    if dropped:
        log.info(
            "left out of train: %d near duplicate(s) of val/test images (%s)", dropped, LEAKAGE
        )


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

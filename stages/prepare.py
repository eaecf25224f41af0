"""prepare: decode every raw image, standardize it, pack the results into shards.

Each image is fully decoded (a truncated file fails here, not in training), turned to one
colour mode and size by the shared ``imgpipe.images.standardize``, and stored losslessly as
PNG in tar shards with a manifest. Files that cannot be used are listed in
``reports/prepare.json`` with their reason; identical images share a ``group`` id so that
``split`` can keep duplicates together.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from imgpipe import atomic
from imgpipe.cli import StageError, run_main, worker_count
from imgpipe.images import ImageRejected, Standard, decode, encode_png, standardize
from imgpipe.parallel import ordered_map
from imgpipe.params import PrepareParams, load_params
from imgpipe.raw import RawItem, list_items
from imgpipe.shards import PackedImage, ShardWriter, write_manifest

log = logging.getLogger("imgpipe.prepare")

RAW_DIR = Path("data/raw")
PREPARED_DIR = Path("data/prepared")
REPORT = Path("reports/prepare.json")
INFO_FILE = "info.json"
MANIFEST_COLUMNS = ["id", "label", "shard", "offset", "length", "origin", "sha256", "group"]


@dataclass(frozen=True)
class Outcome:
    png: bytes | None
    pixel_hash: str | None
    reason: str | None


def standardize_one(data: bytes, standard: Standard) -> Outcome:
    """Decode and standardize one file; a rejected file carries its reason instead."""
    try:
        image = standardize(decode(data), standard)
    except ImageRejected as err:
        return Outcome(None, None, str(err))
    pixel_hash = hashlib.sha256(image.tobytes()).hexdigest()
    return Outcome(encode_png(image), pixel_hash, None)


def _standardize_blob(args: tuple[bytes, Standard]) -> Outcome:
    return standardize_one(*args)


def standardize_all(
    items: Sequence[RawItem], standard: Standard, workers: int
) -> Iterator[tuple[RawItem, Outcome]]:
    """Outcomes in input order, whatever the number of workers, so output bytes never vary."""
    blobs = ((item.read(), standard) for item in items)
    return zip(items, ordered_map(_standardize_blob, blobs, workers), strict=True)


def sample_id(origin: str) -> str:
    """Stable across runs and unaffected by other files coming or going."""
    return hashlib.sha256(origin.encode("utf-8")).hexdigest()[:16]


def run(params: PrepareParams, raw_dir: Path, prepared_dir: Path, report_path: Path) -> dict:
    standard = Standard(
        width=params.size[0], height=params.size[1], color=params.color, resample=params.resample
    )
    items, classes = list_items(raw_dir)
    before = Counter({name: 0 for name in classes})
    before.update(item.label for item in items)
    rows, rejected = [], []
    labels_by_group: dict[str, set[str]] = defaultdict(set)
    workers = worker_count(params.workers)
    log.info(
        "standardizing %d files to %dx%d %s with %d worker(s)",
        len(items),
        standard.width,
        standard.height,
        standard.color,
        workers,
    )
    with atomic.atomic_dir(prepared_dir) as scratch, ShardWriter(scratch, params.shard_size) as out:
        progress = tqdm(
            standardize_all(items, standard, workers),
            total=len(items),
            desc="prepare",
            unit="img",
            mininterval=1.0,
        )
        for item, outcome in progress:
            if outcome.png is None:
                rejected.append(
                    {"path": item.origin, "label": item.label, "reason": outcome.reason}
                )
                continue
            image_id = sample_id(item.origin)
            place = out.add(PackedImage(image_id, outcome.png))
            group = outcome.pixel_hash[:16]
            labels_by_group[group].add(item.label)
            rows.append(
                {
                    "id": image_id,
                    "label": item.label,
                    **place,
                    "origin": item.origin,
                    "sha256": outcome.pixel_hash,
                    "group": group,
                }
            )
        out.close()
        after = Counter({name: 0 for name in classes})
        after.update(row["label"] for row in rows)
        _check_class_sizes(after, params.min_per_class, rejected)
        write_manifest(scratch, rows, MANIFEST_COLUMNS)
        atomic.write_json(
            scratch / INFO_FILE,
            {"standard": standard.to_dict(), "classes": classes, "count": len(rows)},
        )
    group_sizes = Counter(row["group"] for row in rows)
    summary = {
        "standard": standard.to_dict(),
        "images": {"found": len(items), "kept": len(rows), "rejected": len(rejected)},
        "counts_before": dict(before),
        "counts_after": dict(after),
        "rejected": rejected,
        "duplicates": {
            "groups_with_copies": sum(1 for n in group_sizes.values() if n > 1),
            "images_in_those_groups": sum(n for n in group_sizes.values() if n > 1),
        },
        "label_conflicts": [
            {"group": group, "labels": sorted(labels)}
            for group, labels in sorted(labels_by_group.items())
            if len(labels) > 1
        ],
    }
    atomic.write_json(report_path, summary)
    log.info(
        "kept %d of %d images, rejected %d (reasons in %s)",
        len(rows),
        len(items),
        len(rejected),
        report_path,
    )
    return summary


def _check_class_sizes(counts: Counter, minimum: int, rejected: list[dict]) -> None:
    small = {name: n for name, n in counts.items() if n < minimum}
    if small:
        listing = ", ".join(f"{name!r} has {n}" for name, n in sorted(small.items()))
        raise StageError(
            f"classes below prepare.min_per_class={minimum}: {listing} "
            f"({len(rejected)} file(s) were rejected). Add images to these classes, remove "
            "their folders, or lower prepare.min_per_class in params.yaml."
        )


def main() -> None:
    run_main("prepare", lambda: run(load_params().prepare, RAW_DIR, PREPARED_DIR, REPORT))


if __name__ == "__main__":
    main()

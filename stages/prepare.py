"""prepare: decode every raw image, standardize it, pack the results into shards.

Each image is fully decoded (a truncated file fails here, not in training), turned upright,
to one colour mode and size by the shared ``imgpipe.images.standardize_file``, and stored
losslessly as PNG in tar shards with a manifest. Files that cannot be used are listed in
``reports/prepare.json`` with their reason; identical images share a ``group`` id so that
``split`` can keep duplicates together, and one image under two labels is reported. Work is
spread over worker processes and streamed: memory holds a window of images, not the dataset.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import sys
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
import PIL
from PIL import features
from tqdm import tqdm

from imgpipe import atomic, images, near_duplicates, quality
from imgpipe.archive_rules import MemberTooLarge
from imgpipe.cli import run_main, worker_count
from imgpipe.content_cache import ContentCache, evict, fingerprint, resolve_dir
from imgpipe.errors import StageError
from imgpipe.hash_index import HashIndex, stamp
from imgpipe.images import (
    ALPHA_MODES,
    SIXTEEN_BIT_MODES,
    STORED,
    Rejection,
    Source,
    Standard,
    encode_png,
    standardize_file,
)
from imgpipe.layout import Layout
from imgpipe.near_duplicates import dct_hash, to_hex
from imgpipe.parallel import Fault, ordered_map
from imgpipe.params import CacheParams, PrepareParams, QualityParams, load_params
from imgpipe.preview_grid import contact_sheet
from imgpipe.quality import FLAGS, flags, measure
from imgpipe.raw import RawItem, list_items, read_source
from imgpipe.shards import (
    INFO_FILE,
    MANIFEST,
    PREPARED_COLUMNS,
    SOURCE_GROUP,
    SOURCE_SPLIT,
    PackedImage,
    ShardWriter,
)

log = logging.getLogger("imgpipe.prepare")

PREVIEW_PER_CLASS = 8
PREVIEW_CLASSES = 24
# Most bytes of file content read ahead and not yet standardized (archive members, which the
# parent reads): photos of a few MB, or members near download.max_member_mb, then take fewer
# at a time instead of hundreds. One item always goes, whatever its size.
IN_FLIGHT_BYTES = 64 * 1024**2
GALLERY_PER_FLAG = 16
# Shard PNGs are stored uncompressed: zlib at level 1 took a quarter of the time per 64x64 RGB
# image once decoding was all else that was left, for shards 1.5x smaller (1.2x at 32x32 grey).
SHARD_PNG_LEVEL = STORED
# Libraries whose version can change a standardized image's bytes: the cache keys on them.
CODEC_FEATURES = ("jpg", "zlib", "libtiff", "webp", "jpg_2000", "littlecms2", "avif")
HASH_INDEX = "files.json"  # in the cache folder: content hashes of local files by their stat

# What each file extension promises, to report files whose content is another format.
EXTENSION_FORMATS = {
    ".jpg": {"JPEG", "MPO"},
    ".jpeg": {"JPEG", "MPO"},
    ".jpe": {"JPEG", "MPO"},
    ".jfif": {"JPEG"},
    ".png": {"PNG"},
    ".gif": {"GIF"},
    ".webp": {"WEBP"},
    ".bmp": {"BMP"},
    ".tif": {"TIFF"},
    ".tiff": {"TIFF"},
}


@dataclass(frozen=True)
class Outcome:
    png: bytes | None
    pixel_hash: str | None
    reason: str | None
    kind: str | None = None  # why it was rejected, as a short code
    source: Source | None = None
    phash: str | None = None  # perceptual fingerprint of the standardized pixels, for split
    quality: dict[str, float] | None = None  # imgpipe.quality measures of the decoded image


class LocalFile(NamedTuple):
    """A file on local disk, sent to a worker as its path so the worker reads it.

    The parent then does not copy every image through a pipe.
    """

    path: str
    sha256: str | None = None  # from the hash index: with a cached result, nothing is read
    stamp: tuple[int, int, int, int] | None = None  # the file's stat, for the hash index


class ReadFailure(NamedTuple):
    """An item the parent could not read: its reason and kind go to the report as they are."""

    message: str
    kind: str = "unreadable"


Content = bytes | LocalFile | ReadFailure


def _read(content: bytes | LocalFile) -> bytes:
    if isinstance(content, LocalFile):
        with open(content.path, "rb") as handle:
            return handle.read()
    return content


def standardize_data(data: bytes, standard: Standard, min_side: int = 1) -> Outcome:
    """Decode and standardize one file's bytes; a rejected file carries its reason instead."""
    standardized = standardize_file(data, standard, min_side, keep_decoded=True)
    if isinstance(standardized, Rejection):
        return Outcome(None, None, standardized.reason, standardized.kind)
    image, source, decoded = standardized
    pixel_hash = hashlib.sha256(image.tobytes()).hexdigest()
    phash = to_hex(dct_hash(image))  # here in the workers: the parent only writes
    measures = measure(decoded)  # before resizing: blur does not survive a shrink to 32x32
    png = encode_png(image, SHARD_PNG_LEVEL)
    return Outcome(png, pixel_hash, None, None, source, phash, measures)


def standardize_one(content: Content, standard: Standard, min_side: int = 1) -> Outcome:
    """Read, decode and standardize one file; a rejected file carries its reason instead."""
    if isinstance(content, ReadFailure):
        return Outcome(None, None, content.message, content.kind)
    try:
        data = _read(content)
    except OSError as err:
        return Outcome(None, None, f"cannot read the file: {err}", "unreadable")
    return standardize_data(data, standard, min_side)


def encode_outcome(outcome: Outcome) -> bytes:
    """An outcome as bytes: what workers send back and what the cache stores.

    A line of JSON, then the PNG. Cheaper to send than a pickled dataclass (about 20 us per
    image), and never unpickled, so a cache folder other people can write into cannot run
    code here.
    """
    source = outcome.source
    head = {
        "reason": outcome.reason,
        "kind": outcome.kind,
        "pixel_hash": outcome.pixel_hash,
        "phash": outcome.phash,
        "quality": outcome.quality,
        "source": None if source is None else [getattr(source, f) for f in SOURCE_FIELDS],
    }
    line = json.dumps(head, separators=(",", ":")).encode("utf-8")
    return line + b"\n" + (outcome.png or b"")


SOURCE_FIELDS = tuple(Source.__dataclass_fields__)


def decode_outcome(payload: bytes) -> Outcome:
    line, _, png = payload.partition(b"\n")
    head = json.loads(line)
    source = None
    if head["source"] is not None:
        fields = dict(zip(SOURCE_FIELDS, head["source"], strict=True))
        source = Source(**{**fields, "size": tuple(fields["size"])})
    return Outcome(
        png if head["pixel_hash"] is not None else None,
        head["pixel_hash"],
        head["reason"],
        head["kind"],
        source,
        head["phash"],
        head["quality"],
    )


class Record(NamedTuple):
    """A worker's answer: the file's content hash (None: not hashed), the encoded outcome,
    and whether it was made now (False: taken from the cache)."""

    sha256: str | None
    payload: bytes
    made: bool


@dataclass(frozen=True)
class Work:
    """What every worker needs besides the file: the standard, and the cache if any."""

    standard: Standard
    min_side: int = 1
    cache: ContentCache | None = None


def make_record(content: Content, work: Work) -> Record:
    """The outcome of one file, from the cache when its content was standardized before."""
    if isinstance(content, ReadFailure):
        return Record(None, encode_outcome(standardize_one(content, work.standard)), True)
    cache = work.cache
    known = content.sha256 if isinstance(content, LocalFile) else None
    if cache is not None and known is not None:
        payload = cache.get(known)
        if payload is not None:
            return Record(known, payload, False)
    try:
        data = _read(content)
    except OSError as err:
        failed = Outcome(None, None, f"cannot read the file: {err}", "unreadable")
        return Record(None, encode_outcome(failed), True)
    if cache is None:
        made = standardize_data(data, work.standard, work.min_side)
        return Record(None, encode_outcome(made), True)
    sha256 = hashlib.sha256(data).hexdigest()
    if sha256 != known:  # not listed, or changed since: look again under its real content
        payload = cache.get(sha256)
        if payload is not None:
            return Record(sha256, payload, False)
    # The parent adds it to the cache: one process appends to one pack.
    return Record(
        sha256, encode_outcome(standardize_data(data, work.standard, work.min_side)), True
    )


def cache_fingerprint(standard: Standard, min_side: int) -> str:
    """Everything besides a file's bytes that decides its outcome: the image standard,
    min_side, the shard encoding, the versions of the decoding libraries, and the code."""
    versions = {name: features.version(name) for name in CODEC_FEATURES}
    settings = {
        "standard": standard.to_dict(),
        "min_side": min_side,
        "png_level": SHARD_PNG_LEVEL,
        "pillow": PIL.__version__,
        "numpy": np.__version__,
        "codecs": versions,
    }
    modules = [images, quality, near_duplicates, sys.modules[__name__]]
    return fingerprint(settings, modules)


def _content(item: RawItem, index: HashIndex | None = None) -> Content:
    """What a worker needs to get the item's bytes: a local file's path, or the bytes."""
    if item.path is not None:
        path = os.fspath(item.path)
        if index is None:
            return LocalFile(path)
        try:
            current = stamp(os.stat(path))
        except OSError:
            return LocalFile(path)  # the worker reports why it cannot be read
        return LocalFile(path, index.lookup(path, current), current)
    try:
        return item.read()  # an archive member, say: read where its archive is open
    except MemberTooLarge as err:
        return ReadFailure(str(err), "too_large")  # one image's reason; other damage stops
    except OSError as err:
        return ReadFailure(f"cannot read the file: {err}")


def _in_memory(content: Content) -> int:
    return len(content) if isinstance(content, bytes) else 0


def fault_outcome(content: Content, fault: Fault) -> Outcome:
    """A file whose decoding killed its worker process or ran past ``prepare.timeout``."""
    hint = {
        "crashed": "a decoder crash or running out of memory on this file",
        "timeout": "raise prepare.timeout if the file is sound but slow",
    }.get(fault.kind, "")
    return Outcome(None, None, f"{fault.reason}; {hint}" if hint else fault.reason, fault.kind)


def fault_record(content: Content, fault: Fault) -> Record:
    return Record(None, encode_outcome(fault_outcome(content, fault)), True)


@dataclass
class CacheUse:
    """How a run used the cache: counts for the log, the hash index to save afterwards."""

    cache: ContentCache | None = None
    index: HashIndex | None = None
    hits: int = 0
    made: int = 0


def open_cache(settings: CacheParams, standard: Standard, min_side: int) -> CacheUse:
    if settings.dir is None:
        return CacheUse()
    directory = resolve_dir(settings.dir)
    cache = ContentCache.open(directory, cache_fingerprint(standard, min_side))
    return CacheUse(cache, HashIndex(directory / HASH_INDEX))


def standardize_all(
    items: Sequence[RawItem],
    standard: Standard,
    workers: int,
    min_side: int = 1,
    timeout: float | None = None,
    use: CacheUse | None = None,
) -> Iterator[tuple[RawItem, Outcome]]:
    """Outcomes in input order, whatever the number of workers, so output bytes never vary.

    Decoding always runs in worker processes, even with one worker, so that a file that kills
    its decoder or hangs it for longer than ``timeout`` seconds is one rejection, not the end of
    the stage. With a cache in ``use``, files standardized before are taken from it.
    """
    use = use or CacheUse()
    work = partial(make_record, work=Work(standard, min_side, use.cache))
    # Per item, in order: its content, and its record if the parent found it in the cache
    # (a file known by its stat); the rest go to the workers. Holds small tuples, no images.
    plan: deque[tuple[Content, Record | None]] = deque()

    def to_workers() -> Iterator[Content]:
        for item in items:
            content = _content(item, use.index)
            found = None
            if use.cache is not None and isinstance(content, LocalFile) and content.sha256:
                payload = use.cache.get(content.sha256)
                if payload is not None:
                    found = Record(content.sha256, payload, False)
            plan.append((content, found))
            if found is None:
                yield content

    records = ordered_map(
        work,
        to_workers(),
        workers,
        timeout=timeout,
        on_fault=fault_record,
        size=_in_memory,
        max_size=IN_FLIGHT_BYTES,
    )
    ready: deque[Record] = deque()  # workers' records that arrived before their turn
    for item in items:
        while not plan:  # the workers' input is read ahead only as far as they need
            record = next(records, None)
            if record is None:
                break
            ready.append(record)
        content, found = plan.popleft()
        record = found or (ready.popleft() if ready else next(records))
        _note(use, content, record)
        yield item, decode_outcome(record.payload)


def _note(use: CacheUse, content: Content, record: Record) -> None:
    """Count the record, add a new result to the cache, and remember the file's hash."""
    if not record.made:
        use.hits += 1
    else:
        use.made += 1
        if use.cache is not None and record.sha256 is not None:
            use.cache.put(record.sha256, record.payload)
    local = isinstance(content, LocalFile) and content.stamp is not None
    if use.index is not None and record.sha256 is not None and local:
        use.index.record(content.path, content.stamp, record.sha256)


def sample_id(origin: str) -> str:
    """Stable across runs and unaffected by other files coming or going."""
    return hashlib.sha256(origin.encode("utf-8")).hexdigest()[:16]


def conversions(source: Source) -> list[str]:
    """What was done to a kept file beyond decoding and resizing, for the report's counts."""
    done = []
    if source.orientation != 1:
        done.append("exif_rotated")
    if source.mode in ALPHA_MODES or source.transparency:
        done.append("alpha_composited")
    if source.mode == "CMYK":
        done.append("cmyk_converted")
    if source.mode in SIXTEEN_BIT_MODES:
        done.append("sixteen_bit_scaled")
    if source.frames > 1 and source.format != "MPO":  # MPO's extra frames are previews
        done.append("animated_first_frame")
    if source.draft_scale > 1:
        done.append("jpeg_dct_scaled")
    if source.icc:
        done.append(f"icc_{source.icc}")  # icc_converted to sRGB, or icc_ignored (unusable)
    return done


def format_mismatch(origin: str, source: Source) -> bool:
    expected = EXTENSION_FORMATS.get(os.path.splitext(origin)[1].lower())  # pathlib: 10x slower
    return expected is not None and source.format not in expected


@dataclass
class Tally:
    """Everything the report needs, gathered while images stream past."""

    classes: list[str]
    before: Counter = field(default_factory=Counter)
    after: Counter = field(default_factory=Counter)
    rejected: list[dict] = field(default_factory=list)
    formats: Counter = field(default_factory=Counter)
    converted: Counter = field(default_factory=Counter)
    mismatched: list[dict] = field(default_factory=list)
    animated: list[dict] = field(default_factory=list)
    # Only the first holder of each pixel hash is kept for unique images; copies get a list.
    first_of_group: dict[str, tuple[str, str]] = field(default_factory=dict)
    copies: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    preview: dict[str, list[bytes]] = field(default_factory=dict)
    skipped: list[dict] = field(default_factory=list)
    flagged: dict[str, list[dict]] = field(default_factory=lambda: {f: [] for f in FLAGS})
    flag_gallery: dict[str, list[bytes]] = field(default_factory=lambda: {f: [] for f in FLAGS})

    def flag(self, item: RawItem, outcome: Outcome, thresholds: QualityParams) -> list[str]:
        """Note the quality flags ``outcome`` raises; return those that exclude it."""
        assert outcome.quality is not None and outcome.png is not None
        raised = flags(outcome.quality, thresholds)
        for name in raised:
            self.flagged[name].append({"path": item.origin, "label": item.label, **outcome.quality})
            if len(self.flag_gallery[name]) < GALLERY_PER_FLAG:
                self.flag_gallery[name].append(outcome.png)
        return [name for name in raised if name in thresholds.exclude]

    def quality_report(self, thresholds: QualityParams) -> dict:
        """Counts and files per flag; grey images count only where most images have colour."""
        seen = sum(self.after.values()) + sum(
            1 for r in self.rejected if str(r["kind"]).startswith("quality_")
        )
        report = {"thresholds": thresholds.model_dump(), "flags": {}}
        for name in FLAGS:
            files = self.flagged[name]
            if name == "grayscale" and len(files) * 2 >= seen:
                files = []  # a grey dataset: nothing odd about one more grey image
            report["flags"][name] = {"count": len(files), "files": files}
        return report

    def reject(self, item: RawItem, outcome: Outcome) -> None:
        self.rejected.append(
            {
                "path": item.origin,
                "label": item.label,
                "kind": outcome.kind,
                "reason": outcome.reason,
            }
        )

    def keep(self, item: RawItem, outcome: Outcome, group: str) -> None:
        source = outcome.source
        assert source is not None and outcome.png is not None
        self.after[item.label] += 1
        self.formats[source.format] += 1
        done = conversions(source)
        self.converted.update(done)
        if format_mismatch(item.origin, source):
            self.mismatched.append({"path": item.origin, "format": source.format})
        if "animated_first_frame" in done:
            self.animated.append({"path": item.origin, "frames": source.frames})
        if group in self.first_of_group:
            self.copies.setdefault(group, [self.first_of_group[group]]).append(
                (item.origin, item.label)
            )
        else:
            self.first_of_group[group] = (item.origin, item.label)
        shown = self.preview.setdefault(item.label, [])
        if len(shown) < PREVIEW_PER_CLASS:
            shown.append(outcome.png)

    def duplicate_groups(self) -> list[dict]:
        return [
            {
                "group": group,
                "labels": sorted({label for _, label in members}),
                "paths": [origin for origin, _ in members],
            }
            for group, members in sorted(self.copies.items())
        ]

    def summary(self, standard: Standard) -> dict:
        kept = sum(self.after.values())
        groups = self.duplicate_groups()
        return {
            "standard": standard.to_dict(),
            "images": {
                "found": sum(self.before.values()),
                "kept": kept,
                "rejected": len(self.rejected),
                "distinct": len(self.first_of_group),
            },
            "counts_before": self._per_class(self.before),
            "counts_after": self._per_class(self.after),
            "rejected_by_kind": dict(sorted(Counter(r["kind"] for r in self.rejected).items())),
            "rejected": self.rejected,
            "skipped_by_download": self.skipped,
            "formats": dict(sorted(self.formats.items())),
            "converted": dict(sorted(self.converted.items())),
            "format_not_extension": self.mismatched,
            "animated": self.animated,
            "duplicates": {
                "groups_with_copies": len(groups),
                "images_in_those_groups": sum(len(g["paths"]) for g in groups),
                "groups": groups,
            },
            "label_conflicts": [g for g in groups if len(g["labels"]) > 1],
        }

    def _per_class(self, counts: Counter) -> dict[str, int]:
        """Every class in order, then any label the source did not name, so none goes missing."""
        extra = sorted(set(self.before) - set(self.classes))
        return {name: counts[name] for name in [*self.classes, *extra]}

    def preview_rows(self) -> list[tuple[str, list[bytes]]]:
        names = [name for name in self.classes if self.preview.get(name)]
        return [(f"{name} ({self.after[name]})", self.preview[name]) for name in names][
            :PREVIEW_CLASSES
        ]


def run(params: PrepareParams, layout: Layout) -> dict:
    """Standardize ``layout.raw`` into ``layout.prepared``; write the report and preview."""
    standard = params.standard()
    items, classes = list_items(layout.raw)
    tally = Tally(classes)
    # Files download already set aside (hidden, system, unlabelled) belong in the same report.
    tally.skipped = list(read_source(layout.raw).get("skipped", []))
    tally.before.update(item.label for item in items)
    workers = worker_count(params.workers)
    log.info(
        "standardizing %d files to %dx%d %s (%s) with %d worker(s)",
        len(items),
        standard.width,
        standard.height,
        standard.color,
        standard.fit,
        workers,
    )
    with atomic.atomic_dir(layout.prepared) as scratch:
        _write_prepared(items, standard, params, workers, scratch, tally)
        summary = tally.summary(standard)
        summary["quality"] = tally.quality_report(params.quality)
        # Written before the class check, so a stopped stage still shows why files were dropped.
        atomic.write_json(layout.prepare_report, summary)
        _check_class_sizes(tally, params.min_per_class, layout.prepare_report)
    preview = contact_sheet(tally.preview_rows(), PREVIEW_PER_CLASS)
    atomic.write_bytes(layout.prepare_preview, preview)
    _write_quality_galleries(layout.prepare_quality, tally, summary["quality"])
    _log_summary(summary, layout.prepare_report)
    return summary


def _write_prepared(
    items: Sequence[RawItem],
    standard: Standard,
    params: PrepareParams,
    workers: int,
    scratch: Path,
    tally: Tally,
) -> None:
    use = open_cache(params.cache, standard, params.min_side)
    outcomes = standardize_all(items, standard, workers, params.min_side, params.timeout, use)
    progress = tqdm(outcomes, total=len(items), desc="prepare", unit="img", mininterval=1.0)
    with (
        ShardWriter(scratch, params.shard_size) as shards,
        open(scratch / MANIFEST, "w", encoding="utf-8", newline="") as manifest_file,
    ):
        # Rows go to disk as they come, so memory does not grow with the number of images.
        manifest = csv.writer(manifest_file, lineterminator="\n")
        with_split = any(item.split for item in items)
        with_group = any(item.group for item in items)
        manifest.writerow(
            PREPARED_COLUMNS + [SOURCE_SPLIT] * with_split + [SOURCE_GROUP] * with_group
        )
        for item, outcome in progress:
            if outcome.png is None or outcome.pixel_hash is None:
                tally.reject(item, outcome)
                continue
            excluded = tally.flag(item, outcome, params.quality)
            if excluded:
                reason = "prepare.quality.exclude: " + ", ".join(excluded)
                tally.reject(item, Outcome(None, None, reason, f"quality_{excluded[0]}"))
                continue
            image_id = sample_id(item.origin)
            place = shards.add(PackedImage(image_id, outcome.png))
            group = outcome.pixel_hash[:16]
            tally.keep(item, outcome, group)
            manifest.writerow(
                [
                    image_id,
                    item.label,
                    place["shard"],
                    place["offset"],
                    place["length"],
                    item.origin,
                    outcome.pixel_hash,
                    group,
                    outcome.phash,
                    *([item.split or ""] * with_split),
                    *([item.group or ""] * with_group),
                ]
            )
    atomic.write_json(
        scratch / INFO_FILE,
        {"standard": standard.to_dict(), "classes": tally.classes, "count": tally.after.total()},
    )
    _close_cache(use, params.cache)


def _close_cache(use: CacheUse, settings: CacheParams) -> None:
    if use.cache is None:
        return
    use.cache.commit()
    if use.index is not None:
        use.index.save()
    if use.cache.added:
        evict(use.cache.root, settings.max_bytes)
    log.info(
        "cache %s: %d image(s) reused, %d standardized", use.cache.directory, use.hits, use.made
    )


def _write_quality_galleries(directory: Path, tally: Tally, report: dict) -> None:
    """One picture per flag: the first flagged images, standardized, to judge the threshold."""
    with atomic.atomic_dir(directory) as scratch:
        for name in FLAGS:
            count = report["flags"][name]["count"]
            shown = tally.flag_gallery[name] if count else []
            columns = GALLERY_PER_FLAG // 2
            rows = [
                (f"{name} ({count})" if i == 0 else "", shown[i : i + columns])
                for i in range(0, len(shown), columns)
            ]
            sheet = contact_sheet(rows or [(f"{name} (0)", [])], columns)
            atomic.write_bytes(scratch / f"{name}.png", sheet)


def _check_class_sizes(tally: Tally, minimum: int, report_path: Path) -> None:
    small = {name: tally.after[name] for name in tally.classes if tally.after[name] < minimum}
    if small:
        listing = ", ".join(f"{name!r} has {n}" for name, n in sorted(small.items()))
        raise StageError(
            f"classes below prepare.min_per_class={minimum}: {listing} "
            f"({len(tally.rejected)} file(s) were rejected; {report_path} lists each with its "
            "reason). Add images to these classes, remove their folders, or lower "
            "prepare.min_per_class in params.yaml."
        )


def _log_summary(summary: dict, report_path: Path) -> None:
    images = summary["images"]
    log.info(
        "kept %d of %d images, rejected %d (%s; reasons in %s)",
        images["kept"],
        images["found"],
        images["rejected"],
        ", ".join(f"{kind} {n}" for kind, n in summary["rejected_by_kind"].items()) or "none",
        report_path,
    )
    for conflict in summary["label_conflicts"]:
        log.warning(
            "the same image has labels %s: %s", conflict["labels"], ", ".join(conflict["paths"])
        )


def main() -> None:
    run_main("prepare", lambda: run(load_params().prepare, Layout()))


if __name__ == "__main__":
    main()

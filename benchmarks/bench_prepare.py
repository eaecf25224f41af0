"""prepare against what a user would otherwise write, on a corpus of photo-sized JPEGs.

Three contenders per configuration, measured interleaved in the same run:
- the stage itself (``stages.prepare.run``: workers, JPEG DCT scaling, quality measures,
  perceptual and pixel hashes, shards, manifest, report, duplicate finding), from the raw
  folder to finished outputs, with no cache (every image decoded);
- a plain single-process Pillow loop: open, convert, resize, save a PNG per image, with the
  same size, colour conversion and resampling filter, so the outputs are comparable;
- the floor: in 2 processes, each file opened, decoded at the DCT scale the stage uses and
  resized as the image standard asks, and nothing else (no hash, no measure, nothing kept).
Goals on 2 cores: at least 5x the plain loop, and within 1.25x of the floor (a ratio of at
least 0.8). A row gives the floor against the plain loop: the most any program doing this
work with Pillow on this machine can reach.

Incremental cost: a clean prepare of a folder with an empty cache, then after adding 1% new
images, against the same clean run (goal: at most 5%, a ratio of at least 20). The
incremental output is checked byte for byte against a run without the cache. The folder has
``INCREMENTAL_COUNT`` images at scale 1; ``python -m benchmarks.bench_prepare --incremental
25000`` measures only this row, at 25,000 images.

A CPU-time row per configuration gives the cost per image summed over all processes, which
other programs on the machine do not distort. A last row shows that memory does not grow
with the corpus: the peak resident memory of the stage and its workers on the whole corpus
against a quarter of it, each in a fresh process.
"""

from __future__ import annotations

import argparse
import filecmp
import logging
import os
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

from PIL import Image

from benchmarks.corpus import corpus_members, make_raw_dir
from benchmarks.harness import Comparison, format_table, measure_command, median, median_rates
from imgpipe.cli import worker_count
from imgpipe.images import RESAMPLE, Standard, draft_scale, fit_to_size, luma_weights, to_mode
from imgpipe.layout import Layout
from imgpipe.params import CacheParams, PrepareParams
from stages import prepare

log = logging.getLogger("benchmarks.prepare")

FULL_COUNT = 3000  # JPEGs at scale 1.0
CONFIGS = {
    # The dogs-vs-cats tutorial this project grew from: 32x32 grey by BT.709 weights.
    "32x32 grey bt709": {"size": (32, 32), "color": "grayscale", "luma": "bt709"},
    "64x64 rgb": {"size": (64, 64), "color": "rgb"},
}
PLAIN_NAME = "1-process Pillow loop: open, convert, resize, save PNG"
FLOOR_NAME = "floor: 2 processes, draft decode at the same DCT scale + the resize, nothing else"
FLOOR_GOAL = 1 / 1.25
FLOOR_WORKERS = 2
FLOOR_CHUNK = 64
INCREMENTAL_COUNT = 5000  # images in the folder at scale 1 (--incremental N for another)
ADDED_SHARE = 0.01
MEMORY_PROBE = """
import sys
from pathlib import Path
from dataclasses import replace
from imgpipe.layout import Layout
from imgpipe.params import PrepareParams
from stages import prepare
params = PrepareParams.model_validate_json(sys.argv[1])
out = Path(sys.argv[3])
prepare.run(params, replace(Layout.under(out), raw=Path(sys.argv[2]), prepared=out / "prepared"))
"""


def plain_loop(files: list[Path], out_dir: Path, params: PrepareParams) -> None:
    """What a tutorial does: one file at a time, full decode, convert, resize, save."""
    out_dir.mkdir(parents=True, exist_ok=True)
    method = RESAMPLE[params.resample]
    matrix = (*luma_weights(params.luma), 0.0)
    for index, path in enumerate(files):
        with Image.open(path) as image:
            if params.color == "grayscale":
                converted = image.convert("L", matrix=matrix)
            else:
                converted = image.convert("RGB")
            converted.resize(params.size, method).save(out_dir / f"{index:06d}.png")


def _floor_chunk(paths: list[Path], standard: Standard) -> int:
    for path in paths:
        with Image.open(path) as image:
            scale = draft_scale(image.size, standard)
            # As the stage decodes: straight to grey where JPEG's own luma is the standard's.
            straight = standard.mode == "L" and standard.luma == "bt601"
            image.draft(
                "L" if straight else image.mode, (image.width // scale, image.height // scale)
            )
            image.load()
            fit_to_size(to_mode(image, standard), standard)
    return len(paths)


def floor(files: list[Path], params: PrepareParams) -> None:
    """The decoding and resizing the stage cannot avoid, in 2 processes and nothing more."""
    standard = params.standard()
    chunks = [files[i : i + FLOOR_CHUNK] for i in range(0, len(files), FLOOR_CHUNK)]
    with ProcessPoolExecutor(FLOOR_WORKERS) as pool:
        done = sum(pool.map(_floor_chunk, chunks, [standard] * len(chunks)))
    assert done == len(files)


def _stage(params: PrepareParams, raw_dir: Path, out: Path) -> None:
    prepare.run(params, replace(Layout.under(out), raw=raw_dir, prepared=out / "prepared"))


def cpu_seconds(fn) -> float:
    """CPU time of ``fn`` in this process and the worker processes it started and ended."""
    before = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    fn()
    after = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(
        (a.ru_utime + a.ru_stime) - (b.ru_utime + b.ru_stime)
        for a, b in zip(after, before, strict=True)
    )


def compare_config(name: str, params: PrepareParams, raw_dir: Path, work: Path, repeats: int):
    files = sorted((raw_dir / "images").rglob("*.jpg"))
    rates = median_rates(
        {
            "stage": lambda: _stage(params, raw_dir, work / "stage"),
            "plain": lambda: plain_loop(files, work / "plain", params),
            "floor": lambda: floor(files, params),
        },
        len(files),
        repeats,
    )
    workers = worker_count(params.workers)
    what = f"{name}, {len(files)} JPEGs, {workers} workers"
    # CPU per image does not depend on what else the machine runs, unlike images/s; with the
    # cores to itself, the stage's wall-clock ratio approaches workers x this ratio.
    cpu_ms = {
        "stage": cpu_seconds(lambda: _stage(params, raw_dir, work / "stage")),
        "plain": cpu_seconds(lambda: plain_loop(files, work / "plain", params)),
        "floor": cpu_seconds(lambda: floor(files, params)),
    }
    cpu_ms = {key: 1000 * value / len(files) for key, value in cpu_ms.items()}
    return [
        Comparison(
            "prepare",
            what,
            "img/s",
            ours=median(rates["stage"]),
            plain=median(rates["plain"]),
            plain_name=PLAIN_NAME,
            goal=5,
            samples=rates,
        ),
        Comparison(
            "prepare",
            what,
            "img/s",
            ours=median(rates["stage"]),
            plain=median(rates["floor"]),
            plain_name=FLOOR_NAME + " (goal: within 1.25x)",
            goal=FLOOR_GOAL,
            samples=rates,
        ),
        Comparison(
            "prepare",
            f"{name}, the floor itself",
            "img/s",
            ours=median(rates["floor"]),
            plain=median(rates["plain"]),
            plain_name=PLAIN_NAME,
            samples=rates,
        ),
        Comparison(
            "prepare",
            f"{name}, CPU time, all processes",
            "ms/img",
            ours=cpu_ms["stage"],
            plain=cpu_ms["plain"],
            plain_name=PLAIN_NAME,
            higher_is_better=False,
        ),
        Comparison(
            "prepare",
            f"{name}, CPU time, all processes",
            "ms/img",
            ours=cpu_ms["stage"],
            plain=cpu_ms["floor"],
            plain_name="the floor (less disturbed by other programs than images/s)",
            higher_is_better=False,
        ),
    ]


def peak_memory_mib(params: PrepareParams, raw_dir: Path, out: Path) -> float:
    """Peak resident memory of the stage with its workers, run in a fresh interpreter."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cost = measure_command(
        [sys.executable, "-c", MEMORY_PROBE, params.model_dump_json(), str(raw_dir), str(out)],
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "IMGPIPE_LOG_LEVEL": "WARNING"},
    )
    return cost.peak_rss_mib


def quarter_of(raw_dir: Path, target: Path) -> Path:
    """A raw folder holding every fourth image of ``raw_dir``, hard-linked, not copied."""
    files = sorted((raw_dir / "images").rglob("*.jpg"))
    for path in files[::4]:
        link = target / path.relative_to(raw_dir)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, link)
    shutil.copy(raw_dir / "source.json", target / "source.json")
    return target


def compare_memory(params: PrepareParams, raw_dir: Path, work: Path) -> Comparison:
    small = quarter_of(raw_dir, work / "quarter")
    count = len(list((raw_dir / "images").rglob("*.jpg")))
    whole = peak_memory_mib(params, raw_dir, work / "memory-whole")
    quarter = peak_memory_mib(params, small, work / "memory-quarter")
    return Comparison(
        "prepare",
        f"peak memory, {count} vs {count // 4 + (count % 4 > 0)} images",
        "MiB",
        ours=whole,
        plain=quarter,
        plain_name="the same stage on a quarter of the images (goal: at most 1.3x)",
        higher_is_better=False,
        goal=1 / 1.3,
    )


def _timed_stage(params: PrepareParams, raw_dir: Path, out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    _stage(params, raw_dir, out)
    return time.perf_counter() - started


def _add_images(raw_dir: Path, count: int, seed: int) -> list[Path]:
    """``count`` new corpus JPEGs (another seed: other pictures) beside the folder's own."""
    added = []
    for name, data in corpus_members(count, seed=seed, workers=2):
        path = raw_dir / "images" / name.replace(".jpg", "-added.jpg")
        path.write_bytes(data)
        added.append(path)
    return added


def compare_incremental(count: int, work: Path, repeats: int) -> Comparison:
    """A clean prepare with an empty cache against the rerun after adding 1% new images."""
    config = next(iter(CONFIGS))
    raw_dir = work / "incremental-raw"
    make_raw_dir(raw_dir, count, workers=2)
    added = max(1, round(count * ADDED_SHARE))
    clean_s, again_s = [], []
    for repeat in range(repeats):
        cache = work / f"incremental-cache-{repeat}"
        params = PrepareParams(**CONFIGS[config], cache=CacheParams(dir=str(cache)))
        clean_s.append(_timed_stage(params, raw_dir, work / "incremental-clean"))
        new = _add_images(raw_dir, added, seed=1000 + repeat)
        again_s.append(_timed_stage(params, raw_dir, work / "incremental-again"))
        if repeat == 0:
            _check_same_as_uncached(params, raw_dir, work)
        for path in new:
            path.unlink()
        shutil.rmtree(cache)
    return Comparison(
        "prepare",
        f"rerun after adding {added} to {count} images ({config}), s",
        "s",
        ours=median(again_s),
        plain=median(clean_s),
        plain_name="a clean prepare of the same folder, empty cache (goal: at most 5%)",
        higher_is_better=False,
        goal=1 / 0.05,
        samples={"rerun": again_s, "clean": clean_s},
    )


def _check_same_as_uncached(params: PrepareParams, raw_dir: Path, work: Path) -> None:
    """The rerun from the cache must give the bytes of a run that decodes everything."""
    reference = work / "incremental-reference"
    _timed_stage(params.model_copy(update={"cache": CacheParams()}), raw_dir, reference)
    again = work / "incremental-again"
    for path in sorted(p for p in reference.rglob("*") if p.is_file()):
        twin = again / path.relative_to(reference)
        if not filecmp.cmp(path, twin, shallow=False):
            raise RuntimeError(f"{twin} differs from {path}: the cache changed the output")
    log.info("the rerun from the cache gave the bytes of an uncached run")


def run(scale: float = 1.0, repeats: int = 3) -> list[Comparison]:
    count = max(8, round(FULL_COUNT * scale))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp:
        work = Path(tmp)
        log.info("making %d corpus JPEGs", count)
        raw_dir = make_raw_dir(work / "raw", count)
        for name, overrides in CONFIGS.items():
            params = PrepareParams(**overrides)
            log.info("prepare benchmark: %s, %d repeat(s)", name, repeats)
            rows.extend(
                compare_config(name, params, raw_dir, work / name.replace(" ", "_"), repeats)
            )
        first = PrepareParams(**next(iter(CONFIGS.values())))
        rows.append(compare_memory(first, raw_dir, work))
        incremental = max(100, round(INCREMENTAL_COUNT * scale))
        log.info("incremental benchmark: %d images, %d repeat(s)", incremental, repeats)
        rows.append(compare_incremental(incremental, work, repeats))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="prepare's incremental cost at a chosen size")
    parser.add_argument("--incremental", type=int, default=25_000, help="images in the folder")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp:
        print(format_table([compare_incremental(args.incremental, Path(tmp), args.repeats)]))


if __name__ == "__main__":
    main()

"""prepare against what a user would otherwise write, on a corpus of photo-sized JPEGs.

Three contenders per configuration, measured interleaved in the same run:
- the stage itself (``stages.prepare.run``: workers, JPEG DCT scaling, shards, manifest,
  report, duplicate finding), from the raw folder to finished outputs;
- a plain single-process Pillow loop: open, convert, resize, save a PNG per image, with the
  same size, colour conversion and resampling filter, so the outputs are comparable;
- decoding alone: open and fully decode each file in one process, no resize, nothing written.
Goals on 2 cores: at least 5x the plain loop, and at least half the rate of decoding alone.

A CPU-time row per configuration gives the cost per image summed over all processes, which
other programs on the machine do not distort. A last row shows that memory does not grow
with the corpus: the peak resident memory of the stage and its workers on the whole corpus
against a quarter of it, each in a fresh process.
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from PIL import Image

from benchmarks.corpus import make_raw_dir
from benchmarks.harness import Comparison, measure_command, median, median_rates
from imgpipe.cli import worker_count
from imgpipe.images import RESAMPLE, luma_weights
from imgpipe.layout import Layout
from imgpipe.params import PrepareParams
from stages import prepare

log = logging.getLogger("benchmarks.prepare")

FULL_COUNT = 3000  # JPEGs at scale 1.0
CONFIGS = {
    # The dogs-vs-cats tutorial this project grew from: 32x32 grey by BT.709 weights.
    "32x32 grey bt709": {"size": (32, 32), "color": "grayscale", "luma": "bt709"},
    "64x64 rgb": {"size": (64, 64), "color": "rgb"},
}
PLAIN_NAME = "1-process Pillow loop: open, convert, resize, save PNG"
DECODE_NAME = "1-process decode only (open + load)"
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


def decode_only(files: list[Path]) -> None:
    for path in files:
        with Image.open(path) as image:
            image.load()


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
            "decode": lambda: decode_only(files),
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
            plain=median(rates["decode"]),
            plain_name=DECODE_NAME + " (goal: within 2x)",
            goal=0.5,
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
    return rows

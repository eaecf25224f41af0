"""How the pipeline's costs grow with the data: about 2.5k against about 25k photos.

The corpus is one tar archive of photo-sized JPEGs (the ``archive`` source), run through the
real ``dvc repro`` in a throw-away copy of the project, one stage at a time, measuring each
stage's wall time and the peak memory of its whole process tree. Then a no-op ``dvc repro``
is timed: checking that nothing changed must not cost more as the data grows, which is why
images live in shards and a downloaded archive stays one file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks.corpus import make_archive
from benchmarks.harness import Growth, RunCost, measure_command
from benchmarks.project import copy_project, pipeline_env
from imgpipe.cli import worker_count

log = logging.getLogger("benchmarks.scaling")

SIZES = (2500, 25000)
STAGES = ("download", "prepare", "split", "augment", "train", "evaluate")
NOOP_GOAL = 1.5  # no-op repro at 25k may cost at most this much more than at 2.5k
MEMORY_GOAL = 1.3  # every stage streams, so its peak memory must barely grow
CACHE = Path(os.environ.get("IMGPIPE_BENCH_CACHE", Path.home() / ".cache" / "imgpipe-bench"))


@dataclass
class PipelineCosts:
    images: int
    stages: dict[str, RunCost]
    noop_seconds: float


def corpus_archive(count: int) -> Path:
    """The archive of ``count`` photos, made once and kept: making 25k JPEGs takes minutes."""
    path = CACHE / f"photos-{count}.tar"
    if not path.exists():
        log.info("making a corpus of %d photos in %s", count, path)
        make_archive(path.with_suffix(".partial"), count, seed=0, workers=worker_count(0))
        path.with_suffix(".partial").rename(path)
    return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def measure_pipeline(count: int, repeats: int, work: Path) -> PipelineCosts:
    archive = corpus_archive(count)
    project = copy_project(
        work / f"project-{count}",
        {
            "download": {"source": "archive", "path": str(archive), "sha256": sha256_of(archive)},
            "train": {"epochs": 1},
        },
    )
    env = pipeline_env()
    # The params check comes first in the pipeline; it does not grow with the data.
    measure_command(["dvc", "repro", "--single-item", "validate"], project, env)
    stages = {}
    for stage in STAGES:
        stages[stage] = measure_command(["dvc", "repro", "--single-item", stage], project, env)
        log.info(
            "%d images: %s took %.1f s, peak %.0f MiB",
            count,
            stage,
            stages[stage].seconds,
            stages[stage].peak_rss_mib,
        )
    noop = [
        measure_command(["dvc", "repro", STAGES[-1]], project, env).seconds for _ in range(repeats)
    ]
    return PipelineCosts(count, stages, statistics.median(noop))


def growth_rows(small: PipelineCosts, large: PipelineCosts) -> list[Growth]:
    sizes = {"small_size": small.images, "large_size": large.images}
    rows = [
        Growth(
            "dvc",
            "no-op dvc repro",
            "s",
            small.noop_seconds,
            large.noop_seconds,
            goal=NOOP_GOAL,
            **sizes,
        )
    ]
    for stage in STAGES:
        seconds = [c.stages[stage].seconds for c in (small, large)]
        rows.append(Growth(stage, "dvc repro time", "s", *seconds, **sizes))
    for stage in STAGES:
        rows.append(
            Growth(
                stage,
                "peak memory (process tree)",
                "MiB",
                small.stages[stage].peak_rss_mib,
                large.stages[stage].peak_rss_mib,
                goal=MEMORY_GOAL,
                **sizes,
            )
        )
    return rows


def run(scale: float = 1.0, repeats: int = 3) -> list[Growth]:
    small_count, large_count = (max(40, int(n * scale)) for n in SIZES)
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        small = measure_pipeline(small_count, repeats, Path(tmp))
        large = measure_pipeline(large_count, repeats, Path(tmp))
    return growth_rows(small, large)

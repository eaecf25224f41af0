"""A sweep of four queued experiments over a data-stage param, one worker against two.

A copy of the project runs the default pipeline (digits) with `dvc repro`, then four
experiments that change ``prepare.size`` are queued and run by `dvc queue start -j 1` in one
copy and by `-j 2` in another; each figure is the wall time from the start of the queue to
the last experiment's end. Every experiment reruns prepare, split, augment, train, evaluate
and export in its own temporary copy of the project.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.harness import Comparison
from benchmarks.project import copy_project, pipeline_env

log = logging.getLogger("benchmarks.sweep")

SIZES = ([24, 24], [28, 28], [36, 36], [40, 40])  # the default is 32x32
POLL_SECONDS = 2.0


def _dvc(args: list[str], project: Path) -> str:
    result = subprocess.run(
        ["dvc", *args], cwd=project, env=pipeline_env(), capture_output=True, text=True
    )
    if result.returncode:
        raise RuntimeError(f"dvc {' '.join(args)}: {result.stdout}{result.stderr}"[-3000:])
    return result.stdout + result.stderr


def baseline(work: Path, epochs: int) -> Path:
    """A copy of the project with the default pipeline reproduced and committed."""
    project = copy_project(work / "baseline", {"train": {"epochs": epochs}})
    _dvc(["repro"], project)
    subprocess.run(["git", "add", "-A"], cwd=project, env=pipeline_env(), check=True)
    subprocess.run(
        ["git", "commit", "-q", "-m", "baseline"], cwd=project, env=pipeline_env(), check=True
    )
    return project


def sweep_seconds(project: Path, jobs: int) -> float:
    """Queue one experiment per size, run them with ``jobs`` workers; the wall time."""
    for width, height in SIZES:
        _dvc(["exp", "run", "--queue", "-S", f"prepare.size=[{width},{height}]"], project)
    started = time.perf_counter()
    _dvc(["queue", "start", "-j", str(jobs)], project)
    while True:
        status = _dvc(["queue", "status"], project)
        if not re.search(r"\b(Queued|Running)\b", status):
            break
        time.sleep(POLL_SECONDS)
    seconds = time.perf_counter() - started
    _dvc(["queue", "stop"], project)
    succeeded = status.count("Success")
    if succeeded != len(SIZES):
        raise RuntimeError(f"{succeeded} of {len(SIZES)} experiments succeeded:\n{status}")
    log.info("%d experiments at -j %d: %.1f s", len(SIZES), jobs, seconds)
    return seconds


def run(scale: float = 1.0, repeats: int = 1) -> list[Comparison]:
    """One sweep per worker count (a sweep takes minutes: ``repeats`` is not used)."""
    epochs = max(1, round(12 * scale))  # params.yaml's 12 at full scale
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        base = baseline(Path(tmp), epochs)
        seconds = {}
        for jobs in (1, 2):
            # A fresh copy each time: DVC's run cache would otherwise restore the second
            # sweep from the first.
            project = Path(tmp) / f"sweep-j{jobs}"
            shutil.copytree(base, project, symlinks=True)
            seconds[jobs] = sweep_seconds(project, jobs)
    print(f"sweep of {len(SIZES)} experiments: -j 1 {seconds[1]:.1f} s, -j 2 {seconds[2]:.1f} s")
    return [
        Comparison(
            "sweep",
            f"{len(SIZES)} queued experiments over prepare.size ({epochs} epochs each), "
            "wall time at dvc queue start -j 2",
            "s",
            round(seconds[2], 1),
            round(seconds[1], 1),
            "the same experiments at -j 1",
            higher_is_better=False,
            samples={"-j 2": [seconds[2]], "-j 1": [seconds[1]]},
        )
    ]

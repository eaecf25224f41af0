"""The table every benchmark reports into: ours against the plain approach, as ratios.

A benchmark module ``benchmarks/bench_<name>.py`` exposes ``run(scale: float, repeats: int)``
returning a list of ``Comparison``. Both sides of a comparison are measured in the same run,
interleaved, ``repeats`` times; the table shows medians.
"""

from __future__ import annotations

import contextlib
import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Comparison:
    """One row: a throughput (higher is better) or a cost (lower is better) of two approaches."""

    stage: str
    what: str
    unit: str
    ours: float
    plain: float
    plain_name: str
    higher_is_better: bool = True
    goal: float | None = None  # the ratio the design asks for, if any
    samples: dict[str, list[float]] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        if self.higher_is_better:
            return self.ours / self.plain if self.plain else float("inf")
        return self.plain / self.ours if self.ours else float("inf")

    @property
    def meets_goal(self) -> bool | None:
        return None if self.goal is None else self.ratio >= self.goal

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": round(self.ratio, 3), "meets_goal": self.meets_goal}


def time_call(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def median_rates(
    contenders: dict[str, Callable[[], object]], work: float, repeats: int
) -> dict[str, list[float]]:
    """``work / seconds`` of each contender, alternating them so drift hits all alike."""
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            rates[name].append(work / time_call(fn))
    return rates


def median(values: list[float]) -> float:
    return statistics.median(values)


def machine() -> dict[str, object]:
    import os

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
    }


def format_table(rows: list[Comparison]) -> str:
    if not rows:
        return ""
    header = f"{'stage':<10} {'what':<38} {'ours':>10} {'plain':>10} {'unit':<10} {'ratio':>7} goal"
    lines = [header, "-" * len(header)]
    for row in rows:
        goal = "" if row.goal is None else f">={row.goal:g} {'ok' if row.meets_goal else 'MISSED'}"
        lines.append(
            f"{row.stage:<10} {row.what[:38]:<38} {row.ours:>10.4g} {row.plain:>10.4g} "
            f"{row.unit:<10} {row.ratio:>6.2f}x {goal}"
        )
        lines.append(f"{'':<10}   vs {row.plain_name}")
    return "\n".join(lines)


def write_report(rows: list[Comparison | Growth], path: Path) -> None:
    payload = {"machine": machine(), "rows": [row.to_dict() for row in rows]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class RunCost:
    seconds: float
    peak_rss_mib: float  # of the whole process tree (worker processes included), sampled


def measure_command(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, interval: float = 0.02
) -> RunCost:
    """Wall time and peak resident memory of a command and all its descendants.

    ``ru_maxrss`` would report only the largest single process; a stage with a pool of
    workers uses their sum, so the tree is sampled instead.
    """
    import subprocess
    import tempfile

    import psutil

    # stderr goes to a file, not a pipe: a chatty command (TensorFlow) would fill a pipe
    # nobody reads while sampling, and block.
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        process = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=errors)
        peak = _sample_peak_rss(process, psutil.Process(process.pid), interval)
        seconds = time.perf_counter() - started
        if process.returncode != 0:
            errors.seek(0)
            tail = errors.read().decode(errors="replace")[-3000:]
            raise RuntimeError(f"{' '.join(args)} failed with {process.returncode}:\n{tail}")
    return RunCost(seconds, peak / 2**20)


def _sample_peak_rss(process, root, interval: float) -> int:
    """Largest summed resident memory of ``root`` and its descendants until ``process`` ends."""
    import psutil

    peak = 0
    while process.poll() is None:
        total = 0
        with contextlib.suppress(psutil.Error):
            for member in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += member.memory_info().rss
        peak = max(peak, total)
        time.sleep(interval)
    return peak


@dataclass
class Growth:
    """How a cost grows from a small dataset to a large one (lower is better)."""

    stage: str
    what: str
    unit: str
    small: float
    large: float
    small_size: int
    large_size: int
    goal: float | None = None  # the largest growth the design allows, if any

    @property
    def growth(self) -> float:
        return self.large / self.small if self.small else float("inf")

    @property
    def meets_goal(self) -> bool | None:
        return None if self.goal is None else self.growth <= self.goal

    @property
    def per_1k_more(self) -> float:
        """The cost of each further 1,000 images, with fixed start-up costs taken out."""
        return (self.large - self.small) * 1000 / (self.large_size - self.small_size)

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "growth": round(self.growth, 3),
            "meets_goal": self.meets_goal,
            "per_1k_more": round(self.per_1k_more, 4),
        }


def format_growth_table(rows: list[Growth]) -> str:
    if not rows:
        return ""
    small, large = rows[0].small_size, rows[0].large_size
    header = (
        f"{'stage':<10} {'what':<28} {f'{small} imgs':>11} {f'{large} imgs':>11} "
        f"{'unit':<5} {'per 1k more':>11} {'growth':>7} goal"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        goal = "" if row.goal is None else f"<={row.goal:g} {'ok' if row.meets_goal else 'MISSED'}"
        lines.append(
            f"{row.stage:<10} {row.what[:28]:<28} {row.small:>11.4g} {row.large:>11.4g} "
            f"{row.unit:<5} {row.per_1k_more:>11.3g} {row.growth:>6.2f}x {goal}"
        )
    return "\n".join(lines)


def row_to_dict(row: Comparison | Growth) -> dict:
    return {"kind": type(row).__name__, **asdict(row)}


def row_from_dict(data: dict) -> Comparison | Growth:
    kinds = {"Comparison": Comparison, "Growth": Growth}
    fields = {key: value for key, value in data.items() if key != "kind"}
    return kinds[data["kind"]](**fields)

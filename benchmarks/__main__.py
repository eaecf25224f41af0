"""Run every benchmark (or those named) and print one table; also write reports/benchmarks.json.

python -m benchmarks                 # all, full size
python -m benchmarks prepare augment # some
python -m benchmarks --scale 0.1     # smaller corpora, for a quick look
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import pkgutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.harness import (
    Comparison,
    Growth,
    format_growth_table,
    format_table,
    row_from_dict,
    row_to_dict,
    write_report,
)

REPORT = Path("reports/benchmarks.json")


def available() -> list[str]:
    package = Path(__file__).parent
    return sorted(
        m.name[len("bench_") :]
        for m in pkgutil.iter_modules([str(package)])
        if m.name.startswith("bench_")
    )


def run_isolated(name: str, scale: float, repeats: int) -> list[Comparison | Growth]:
    """Run one benchmark in a fresh interpreter, so no state one leaves behind (TensorFlow's
    thread pools, a loaded model, warm caches of Python objects) colours the next."""
    with tempfile.TemporaryDirectory() as tmp:
        rows_file = Path(tmp) / "rows.json"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks",
                name,
                "--scale",
                str(scale),
                "--repeats",
                str(repeats),
                "--rows-to",
                str(rows_file),
            ],
            check=True,
        )
        return [row_from_dict(row) for row in json.loads(rows_file.read_text())]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default all: {available()})")
    parser.add_argument("--scale", type=float, default=1.0, help="corpus size factor")
    parser.add_argument("--repeats", type=int, default=3, help="repeats per measurement")
    parser.add_argument("--report", type=Path, default=REPORT)
    parser.add_argument("--rows-to", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    names = args.names or available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; available: {available()}")
    if args.rows_to:
        # A child run: one benchmark, rows handed back to the parent as JSON.
        module = importlib.import_module(f"benchmarks.bench_{names[0]}")
        rows = module.run(scale=args.scale, repeats=args.repeats)
        args.rows_to.write_text(json.dumps([row_to_dict(row) for row in rows]))
        return
    rows = []
    for name in names:
        rows.extend(run_isolated(name, args.scale, args.repeats))
    comparisons = [row for row in rows if isinstance(row, Comparison)]
    growths = [row for row in rows if isinstance(row, Growth)]
    print("\n\n".join(t for t in (format_table(comparisons), format_growth_table(growths)) if t))
    write_report(rows, args.report)


if __name__ == "__main__":
    main()

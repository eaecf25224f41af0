"""predict: top-k labels with probabilities for image files, folders or glob patterns.

    predict photo.jpg holiday/ 'scans/**/*.png' --top-k 3
    predict holiday/ --format json --output predictions.json
    python -m imgpipe.predict ...    # the same, without the console script

Every file goes through ``imgpipe.images.standardize_file`` with the image standard saved
beside the model (``preprocessing.json``, or ``model.json`` beside an export): the very
function ``prepare`` used, so the model gets exactly the pixels it would have been trained
on. ``--model`` takes the Keras model or any export (a SavedModel folder, ``.onnx``,
``.tflite``), run through ``imgpipe.runtimes``; ONNX and TFLite never load TensorFlow.
Files are read and decoded in worker processes, in order, and fed to the model in batches,
so a folder of thousands of images takes seconds. A file that cannot be read is reported
with its reason and the others are still predicted; the exit status is then 1 (2 for a
missing model or no input at all).
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain, islice
from pathlib import Path

import numpy as np
from tqdm import tqdm

from imgpipe import atomic, runtimes
from imgpipe.cli import run_main, worker_count
from imgpipe.errors import StageError
from imgpipe.images import Rejection, Standard, model_array, standardize_file
from imgpipe.labels import display_name, is_clutter
from imgpipe.layout import PROJECT_MARKER, Layout, find_project
from imgpipe.parallel import Fault, ordered_map
from imgpipe.quiet_tf import LOG_LEVEL_VARIABLE
from imgpipe.runtimes import Model
from imgpipe.trained import top_k

log = logging.getLogger("imgpipe.predict")

EXIT_SOME_UNREADABLE = 1
# Automatic --workers: a process pool pays off only from a few dozen files per process.
FILES_PER_WORKER = 32
DEFAULT_TIMEOUT = 30.0  # seconds per file, as prepare.timeout


@dataclass
class Report:
    model_dir: str  # the model given: train's folder or an export, whatever its format
    classes: list[str]
    top_k: int
    format: str = "keras"
    predictions: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "model_dir": self.model_dir,
            "format": self.format,
            "classes": self.classes,
            "top_k": self.top_k,
            "count": {"predicted": len(self.predictions), "unreadable": len(self.errors)},
            "predictions": self.predictions,
            "errors": self.errors,
        }


def _folder_images(folder: Path) -> list[Path]:
    """Every file below ``folder`` but hidden and operating-system files, whatever its name
    ends with: each is decoded by content, and one that is not an image is reported."""
    return sorted(
        path
        for path in folder.rglob("*")
        if path.is_file() and not is_clutter(path.relative_to(folder).as_posix())
    )


def expand_inputs(specs: Sequence[str]) -> tuple[list[Path], list[dict]]:
    """Files to predict, in the order given (each once), and the specs that named nothing."""
    files: dict[Path, None] = {}
    problems = []
    for spec in specs:
        path = Path(spec)
        # A real file or folder wins over a glob reading: names may contain `[` or `*`.
        if path.is_file():
            found = [path]
        elif path.is_dir():
            found = _folder_images(path)
            if not found:
                problems.append({"path": display_name(spec), "reason": "folder holds no files"})
        elif glob.has_magic(spec):
            matches = sorted(Path(m) for m in glob.glob(spec, recursive=True))
            found = [m for m in matches if m.is_file()]
            found += [f for m in matches if m.is_dir() for f in _folder_images(m)]
            if not found:
                problems.append({"path": display_name(spec), "reason": "pattern matches no files"})
        else:
            found = []
            problems.append({"path": display_name(spec), "reason": "no such file or folder"})
        files.update(dict.fromkeys(found))
    return list(files), problems


def load_file(args: tuple[str, Standard]) -> tuple[np.ndarray | None, str | None]:
    """(HxWxC uint8 pixels exactly as ``prepare`` would store them, None), or (None, reason)."""
    path, standard = args
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        return None, f"cannot read file: {err.strerror or err}"
    standardized = standardize_file(data, standard)
    if isinstance(standardized, Rejection):
        return None, standardized.reason
    return model_array(standardized[0]), None


def _batches(items: Iterable, size: int) -> Iterator[list]:
    items = iter(items)
    while batch := list(islice(items, size)):
        yield batch


def ranked(model: Model, pixels: np.ndarray, k: int) -> list[list[dict]]:
    """The ``k`` likeliest labels of each image with their probabilities, as predict prints."""
    indices, probabilities = top_k(model.probabilities(pixels), k)
    return [
        [
            {"label": model.classes[i], "probability": round(float(p), 6)}
            for i, p in zip(row_indices, row_probabilities, strict=True)
        ]
        for row_indices, row_probabilities in zip(indices, probabilities, strict=True)
    ]


def _files_or_stop(inputs: Sequence[str]) -> tuple[list[Path], list[dict]]:
    files, problems = expand_inputs(inputs)
    if not files:
        listing = "; ".join(f"{p['path']}: {p['reason']}" for p in problems)
        raise StageError(f"nothing to predict ({listing}); give image files, folders or globs")
    return files, problems


def _fault_reason(args: tuple[str, Standard], fault: Fault) -> tuple[None, str]:
    """A file whose decoding killed its worker process or ran past --timeout."""
    hint = " (raise --timeout if the file is sound but slow)" if fault.kind == "timeout" else ""
    return None, f"{fault.kind}: {fault.reason}{hint}"


def _load_all(
    files: list[Path], standard: Standard, workers: int, timeout: float = DEFAULT_TIMEOUT
) -> Iterator:
    """(pixels, reason) per file, in order, decoded in worker processes.

    Always in child processes, even one: a file that crashes or hangs its decoder is then one
    error in the report, not the end of the run.
    """
    if workers == 0:
        workers = min(worker_count(0), max(1, len(files) // FILES_PER_WORKER))
    loaded = ordered_map(
        load_file,
        ((str(path), standard) for path in files),
        workers,
        timeout=timeout,
        on_fault=_fault_reason,
    )
    # Take the first result before TensorFlow loads: the worker processes are forked then,
    # while the parent has no TensorFlow threads whose locks a fork could copy mid-use.
    return chain([next(loaded)], loaded)


def _predict_batch(report: Report, model: Model, batch: list) -> None:
    """Add one batch of (path, (pixels, reason)) to ``report``: predictions, or errors."""
    good = [(path, pixels) for path, (pixels, _) in batch if pixels is not None]
    report.errors.extend(
        {"path": display_name(str(path)), "reason": reason}
        for path, (pixels, reason) in batch
        if pixels is None
    )
    if good:
        tops = ranked(model, np.stack([pixels for _, pixels in good]), report.top_k)
        report.predictions.extend(
            {"path": display_name(str(path)), "top_k": top}
            for (path, _), top in zip(good, tops, strict=True)
        )


def run(
    inputs: Sequence[str],
    model_path: Path,
    k: int,
    batch_size: int,
    workers: int,
    timeout: float = DEFAULT_TIMEOUT,
) -> Report:
    if k < 1 or batch_size < 1:
        raise StageError("--top-k and --batch-size must be at least 1")
    if timeout <= 0:
        raise StageError("--timeout must be above 0 seconds")
    files, problems = _files_or_stop(inputs)
    info = runtimes.describe(model_path)  # reads no framework: workers fork before it loads
    loaded = _load_all(files, info.standard, workers, timeout)
    model = info.load()
    k = min(k, len(model.classes))
    report = Report(str(model_path), model.classes, k, model.format, errors=list(problems))
    progress = tqdm(
        _batches(zip(files, loaded, strict=True), batch_size),
        total=-(-len(files) // batch_size),
        desc="predict",
        unit="batch",
        mininterval=1.0,
        disable=None,  # silent when stderr is not a terminal
    )
    for batch in progress:
        _predict_batch(report, model, batch)
    for problem in report.errors:
        log.warning("skipped %s: %s", problem["path"], problem["reason"])
    log.info("predicted %d image(s), %d skipped", len(report.predictions), len(report.errors))
    if report.errors:
        reasons = Counter(problem["reason"] for problem in report.errors)
        log.info("skipped by reason: %s", "; ".join(f"{n} {r}" for r, n in reasons.most_common()))
    return report


def format_table(report: Report) -> str:
    """One line per image: its path, then each of the k labels with its probability."""
    paths = [p["path"] for p in report.predictions] + [e["path"] for e in report.errors]
    width = max([len("path")] + [len(path) for path in paths])
    cells = [
        [f"{c['label']} {c['probability']:.3f}" for c in p["top_k"]] for p in report.predictions
    ]
    cell_width = max([len("top1")] + [len(c) for row in cells for c in row])
    header = [f"{'path':<{width}}"] + [
        f"{f'top{r + 1}':<{cell_width}}" for r in range(report.top_k)
    ]
    lines = ["  ".join(header).rstrip()]
    for prediction, row in zip(report.predictions, cells, strict=True):
        lines.append(
            "  ".join(
                [f"{prediction['path']:<{width}}"] + [f"{c:<{cell_width}}" for c in row]
            ).rstrip()
        )
    for problem in report.errors:
        lines.append(f"{problem['path']:<{width}}  UNREADABLE: {problem['reason']}")
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="predict",
        description="Top-k labels with probabilities for images, with the model train wrote.",
        epilog="Exit status: 0 all predicted, 1 some files unreadable (the rest predicted), "
        "2 nothing to predict or no model.",
    )
    parser.add_argument(
        "inputs", nargs="+", help="image files, folders (searched recursively) or globs"
    )
    parser.add_argument(
        "--model",
        "--model-dir",
        dest="model",
        type=Path,
        help=f"the folder train wrote, or an export of it: {Layout().export}/model.onnx, a "
        f".tflite file or the SavedModel folder (default: {Layout().model} of the project "
        "holding dvc.yaml, found from the current folder upwards)",
    )
    parser.add_argument("--top-k", type=int, default=3, help="labels per image (default 3)")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument("--output", type=Path, help="write here instead of standard output")
    parser.add_argument("--batch-size", type=int, default=256, help="images per model call")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help=f"decoding processes; 0 (default): one per {FILES_PER_WORKER} files, "
        "at most one per core",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds one file may take to decode before it is reported as an error "
        f"(default {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="show debug messages and TensorFlow's own output"
    )
    return parser.parse_args(argv)


def project_model_dir(start: Path | str = ".") -> Path:
    """``data/model`` of the project around ``start``, so predict works from any sub-folder."""
    project = find_project(start)
    if project is None:
        raise StageError(
            f"no trained model found: neither {Path(start).resolve()} nor a folder above it "
            f"holds {PROJECT_MARKER}. Run predict inside the project, or give "
            f"--model-dir PROJECT/{Layout().model}"
        )
    return project / Layout().model


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.verbose:
        os.environ[LOG_LEVEL_VARIABLE] = "DEBUG"
    outcome: list[Report] = []

    def body() -> None:
        model = args.model or project_model_dir()
        report = run(args.inputs, model, args.top_k, args.batch_size, args.workers, args.timeout)
        if args.format == "json":
            text = json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n"
        else:
            text = format_table(report)
        if args.output:
            atomic.write_text(args.output, text)
        else:
            sys.stdout.write(text)
        outcome.append(report)

    run_main("predict", body)
    if outcome and outcome[0].errors:
        sys.exit(EXIT_SOME_UNREADABLE)


if __name__ == "__main__":
    main()

"""Exports against the Keras model: agreement on the test split, and how fast each one runs.

A float export (SavedModel, ONNX, TFLite float32) must give every probability within
``export.max_difference`` of the Keras model's; a quantized one (TFLite float16, int8) must
pick the same top-1 class on at least ``export.min_agreement`` of the test images. Each is
loaded from its file through ``imgpipe.runtimes``, as ``predict`` and ``serve`` load it, so a
damaged or swapped file fails here rather than in front of a user.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgpipe import runtimes
from imgpipe.errors import StageError
from imgpipe.export_formats import METADATA_FILE, is_quantized
from imgpipe.images import decode_png_array
from imgpipe.params import ExportParams
from imgpipe.runtimes import Model
from imgpipe.shards import read_images, read_manifest, split_rows

SIGNIFICANT = 3  # digits kept of a difference: stable text, and all that a threshold needs


@dataclass
class Agreement:
    """How one export's probabilities compare with the Keras model's, image by image."""

    quantized: bool
    images: int = 0
    max_difference: float = 0.0
    same_top1: int = 0

    def add(self, expected: np.ndarray, got: np.ndarray) -> None:
        self.images += len(expected)
        difference = np.abs(expected - got)
        # NaN (damaged weights) compares false with everything: it must count as the worst.
        worst = float(np.max(difference)) if np.isfinite(difference).all() else float("inf")
        self.max_difference = max(self.max_difference, worst)
        self.same_top1 += int(np.sum(expected.argmax(axis=1) == got.argmax(axis=1)))

    @property
    def top1_agreement(self) -> float:
        return self.same_top1 / self.images if self.images else 0.0

    def problem(self, params: ExportParams) -> str | None:
        """Why this export fails its threshold, or None."""
        if self.quantized:
            if self.top1_agreement < params.min_agreement:
                return (
                    f"top-1 agreement {self.top1_agreement:.4f} ({self.same_top1} of "
                    f"{self.images} test images) is below export.min_agreement "
                    f"{params.min_agreement}"
                )
            return None
        if self.max_difference > params.max_difference:
            return (
                f"max probability difference {self.max_difference:.3g} is over "
                f"export.max_difference {params.max_difference:g} (top-1 agreement "
                f"{self.top1_agreement:.4f} on {self.images} test images)"
            )
        return None

    def figures(self) -> dict:
        return {
            "images": self.images,
            "max_difference": float(f"{self.max_difference:.{SIGNIFICANT}g}"),
            "top1_agreement": round(self.top1_agreement, 6),
        }


def split_batches(prepared: Path, split: Path, batch_size: int) -> Iterator[np.ndarray]:
    """The test split's pixels as training decoded them, in batches, shard by shard."""
    rows = split_rows(read_manifest(prepared), split, "test")
    if rows.empty:
        raise StageError(f"{split}/test.csv names no image of {prepared}: rerun split")
    rows = rows.sort_values(["shard", "offset"], kind="stable")
    batch = []
    for _, data in read_images(prepared, rows):
        batch.append(decode_png_array(data))
        if len(batch) == batch_size:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)


def compare(
    reference: Model, exports: dict[str, Model], batches: Iterable[np.ndarray]
) -> dict[str, Agreement]:
    """Each export (by name) against ``reference`` on every batch."""
    agreements = {name: Agreement(is_quantized(name)) for name in exports}
    for pixels in batches:
        expected = reference.probabilities(pixels)
        for name, model in exports.items():
            agreements[name].add(expected, model.probabilities(pixels))
    return agreements


def load_exports(folder: Path) -> dict[str, Model]:
    """Every export model.json in ``folder`` lists, loaded from its file by its runtime."""
    path = folder / METADATA_FILE
    try:
        files = json.loads(path.read_text(encoding="utf-8"))["exports"]
    except (OSError, ValueError, KeyError) as err:
        raise StageError(f"{path}: cannot read the list of exports ({err})") from None
    return {name: runtimes.load(folder / file) for name, file in files.items()}


def verify(
    folder: Path,
    reference: Model,
    batches: Iterable[np.ndarray],
    params: ExportParams,
    shown_as: Path | None = None,
) -> tuple[dict[str, Model], dict[str, Agreement]]:
    """Load every export of ``folder``, compare it with ``reference``, stop if one disagrees.

    ``shown_as`` names the folder in the message (the stage checks its scratch folder).
    """
    exports = load_exports(folder)
    agreements = compare(reference, exports, batches)
    check(agreements, params, shown_as or folder)
    return exports, agreements


def check(agreements: dict[str, Agreement], params: ExportParams, where: Path) -> None:
    """Stop with every export that disagrees with the Keras model, and its figures."""
    problems = {name: a.problem(params) for name, a in agreements.items()}
    failed = [f"  {name}: {problem}" for name, problem in problems.items() if problem]
    if failed:
        raise StageError(
            f"{len(failed)} export(s) in {where} disagree with the Keras model:\n"
            + "\n".join(failed)
            + "\nA float export this far off is broken (a converter bug, or a file damaged or "
            "replaced); a quantized one may need export.min_agreement lowered or the variant "
            "dropped from export.tflite."
        )


def _median_ms(model: Model, pixels: np.ndarray, runs: int) -> float:
    model.probabilities(pixels)  # the first call sizes buffers and compiles: not timed
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        model.probabilities(pixels)
        seconds.append(time.perf_counter() - started)
    return round(statistics.median(seconds) * 1000, 3)


def latency(model: Model, sample: np.ndarray, batch: int, runs: int) -> dict:
    """Median milliseconds of one image and of a batch (``sample`` repeated to fill it)."""
    images = np.resize(sample, (batch, *sample.shape[1:])).astype(np.uint8)
    return {
        "single_image_ms": _median_ms(model, images[:1], runs),
        "batch_ms": _median_ms(model, images, runs),
        "batch": batch,
    }

"""Pictures of the results: what DVC's vega templates cannot draw (an annotated confusion matrix,
a gallery of mistakes), and PNG twins of its charts (training curves, F1 per class) for people
who read ``reports/`` on GitHub rather than through ``dvc plots show``.

Figures are drawn on matplotlib's ``Figure`` directly (no pyplot), so nothing depends on a
display or on global backend state, and saved as PNG without a timestamp or version text, so
the same numbers give the same bytes and git sees no change when nothing changed.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

# Above this many classes the cell text becomes unreadable; colours alone still tell the story.
MAX_ANNOTATED_CLASSES = 30


def png_bytes(figure: Figure, dpi: int = 100) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


def curves_image(curves: dict[str, dict[str, list[tuple[int, float]]]]) -> bytes:
    """One panel per measure (accuracy, loss), its training and validation series per epoch."""
    measures = list(curves)
    figure = Figure(figsize=(5.0 * max(1, len(measures)), 3.6))
    for index, measure in enumerate(measures):
        axes = figure.add_subplot(1, max(1, len(measures)), index + 1)
        for series, points in curves[measure].items():
            if points:
                steps, values = zip(*points, strict=True)
                style = "--" if series == "train" else "-"
                axes.plot(steps, values, style, marker="o", markersize=3, label=series)
        axes.set_title(f"{measure} per epoch")
        axes.set_xlabel("epoch (0 is the first)")
        axes.set_ylabel(measure)
        axes.grid(alpha=0.3)
        axes.legend()
    figure.tight_layout()
    return png_bytes(figure)


def per_class_image(per_class: dict[str, dict[str, float]], title: str) -> bytes:
    """F1 of each class as a bar (worst at the top), precision and recall as marks on it."""
    ranked = sorted(per_class.items(), key=lambda item: (-item[1]["f1"], item[0]))
    names = [name for name, _ in ranked]
    figure = Figure(figsize=(6.5, min(30.0, 1.2 + 0.32 * len(names))))
    axes = figure.add_subplot()
    positions = np.arange(len(names))
    axes.barh(positions, [figures["f1"] for _, figures in ranked], color="#4c72b0", label="F1")
    axes.plot(
        [f["precision"] for _, f in ranked], positions, "k|", markersize=10, label="precision"
    )
    axes.plot([f["recall"] for _, f in ranked], positions, "rx", markersize=6, label="recall")
    axes.set_yticks(positions, labels=names)
    axes.set_xlim(0, 1.02)
    axes.set_xlabel("score on the test split")
    axes.set_title(title)
    axes.legend(loc="lower left", fontsize=8)
    figure.tight_layout()
    return png_bytes(figure)


def confusion_image(counts: np.ndarray, classes: Sequence[str], title: str) -> bytes:
    """Rows are true classes normalized to 1 (so each diagonal cell is that class's recall);
    every cell also shows its image count, so a small class's errors are not hidden."""
    counts = np.asarray(counts, dtype=np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    n = len(classes)
    side = min(20.0, max(4.5, 0.45 * n + 1.8))
    figure = Figure(figsize=(side + 1.2, side))
    axes = figure.add_subplot()
    shown = axes.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.04, label="fraction of the true class")
    axes.set_xticks(range(n), labels=list(classes), rotation=45 if n > 6 else 0, ha="right")
    axes.set_yticks(range(n), labels=list(classes))
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title)
    if n <= MAX_ANNOTATED_CLASSES:
        for row in range(n):
            for col in range(n):
                if counts[row, col] == 0 and row != col:
                    continue  # empty off-diagonal cells stay blank so the errors stand out
                dark = fractions[row, col] > 0.55
                axes.text(
                    col,
                    row,
                    f"{counts[row, col]}\n{fractions[row, col]:.0%}",
                    ha="center",
                    va="center",
                    fontsize=8 if n > 12 else 9,
                    color="white" if dark else "black",
                )
    figure.tight_layout()
    return png_bytes(figure)


@dataclass(frozen=True)
class Tile:
    """One misclassified image and what the model said about it."""

    pixels: np.ndarray  # HxWxC uint8, as stored in the shards
    true: str
    predicted: str
    probability: float
    sample_id: str
    origin: str = ""  # the source file, so a mistake can be found and looked at
    note: str = ""  # the line under the name instead of "pred <class> (<probability>)"


NAME_CHARACTERS = 22  # what fits above a tile at the gallery's font size


def _short_name(origin: str) -> str:
    """The file name of an origin path, its middle elided if it would not fit."""
    name = origin.rsplit("/", 1)[-1]
    if len(name) <= NAME_CHARACTERS:
        return name
    half = (NAME_CHARACTERS - 1) // 2
    return f"{name[:half]}…{name[-half:]}"


def gallery_image(
    rows: Sequence[tuple[str, Sequence[Tile]]],
    title: str,
    empty_note: str,
    row_caption: str = "true",
) -> bytes:
    """A grid: one row per true class, its most confident mistakes from left to right.

    ``row_caption`` is the word above each row's name, for grids whose rows are not classes.
    """
    rows = [(name, tiles) for name, tiles in rows if tiles]
    if not rows:
        figure = Figure(figsize=(6, 1.6))
        figure.text(0.5, 0.62, title, ha="center", va="center", fontsize=12)
        figure.text(0.5, 0.3, empty_note, ha="center", va="center", fontsize=10)
        return png_bytes(figure)
    columns = max(len(tiles) for _, tiles in rows)
    # At least wide enough for the title, however few mistakes there are.
    figure = Figure(figsize=(max(5.0, 1.2 + 1.8 * columns), 0.7 + 2.2 * len(rows)))
    grid = figure.subplots(
        len(rows), columns + 1, squeeze=False, width_ratios=[0.6] + [1.0] * columns
    )
    for r, (name, tiles) in enumerate(rows):
        label_axes = grid[r][0]
        label_axes.axis("off")
        label_axes.text(
            1.0, 0.5, f"{row_caption}\n{name}", ha="right", va="center", fontsize=11, weight="bold"
        )
        for c in range(columns):
            axes = grid[r][c + 1]
            axes.axis("off")
            if c >= len(tiles):
                continue
            tile = tiles[c]
            pixels = tile.pixels
            if pixels.shape[-1] == 1:
                axes.imshow(pixels[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            else:
                axes.imshow(pixels, interpolation="nearest")
            note = tile.note or f"pred {tile.predicted} ({tile.probability:.2f})"
            axes.set_title(
                f"{_short_name(tile.origin)}\n{note}",
                fontsize=8,
                color="firebrick",
            )
    figure.suptitle(title, fontsize=12)
    figure.tight_layout()
    return png_bytes(figure)

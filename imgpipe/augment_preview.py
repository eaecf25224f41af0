"""A picture of what the augment params do: originals beside their augmented samples.

Each row is one training image (its class and id under it) followed by samples made from it,
each titled with the operations that were applied. Drawn with matplotlib's object API (no
pyplot state) and saved without a timestamp, so equal inputs give equal bytes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

CELL_INCHES = 1.25


@dataclass
class PreviewRow:
    label: str
    origin: str
    original: bytes
    samples: list[tuple[bytes, list[str]]] = field(default_factory=list)  # png, operations


def _pixels(png: bytes) -> tuple[np.ndarray, str | None]:
    image = Image.open(io.BytesIO(png))
    if image.mode == "L":
        return np.asarray(image), "gray"
    return np.asarray(image.convert("RGB")), None


def _show(axes, png: bytes, title: str, fontsize: float) -> None:
    pixels, cmap = _pixels(png)
    axes.imshow(pixels, cmap=cmap, vmin=0, vmax=255, interpolation="nearest")
    axes.set_title(title, fontsize=fontsize)
    axes.set_xticks([])
    axes.set_yticks([])


def draw_preview(rows: list[PreviewRow]) -> bytes:
    """PNG bytes of the grid; a single explanatory line when there is nothing to show."""
    columns = 1 + max((len(row.samples) for row in rows), default=0)
    height = max(1, len(rows))
    figure = Figure(figsize=(CELL_INCHES * max(columns, 3), CELL_INCHES * 1.3 * height), dpi=100)
    FigureCanvasAgg(figure)
    if not rows:
        figure.text(0.5, 0.5, "no augmented samples (augment amount is 0)", ha="center")
    grid = figure.subplots(height, columns, squeeze=False) if rows else []
    for axes_row, row in zip(grid, rows, strict=False):
        _show(axes_row[0], row.original, f"{row.label}\n{row.origin[:10]}", 7)
        axes_row[0].set_xlabel("original", fontsize=7)
        for axes, (png, operations) in zip(axes_row[1:], row.samples, strict=False):
            _show(axes, png, "\n".join(operations) or "(none)", 6)
        for axes in axes_row[1 + len(row.samples) :]:
            axes.axis("off")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()

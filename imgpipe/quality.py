"""Image-quality measures of a decoded image, and the flags their thresholds raise.

A dataset's odd images (out of focus, nearly black, a blank scan, a panorama, a grey image
among colour ones) are rarely wrong enough to fail decoding, yet they teach a model little
or the wrong thing. ``measure`` runs in prepare's workers on the decoded image before it is
resized (blur cannot be seen after shrinking to 32x32); ``flags`` turns the measures into
named flags with thresholds from ``prepare.quality``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from PIL import Image

# Every flag's name, in the report's order; `prepare.quality.exclude` takes these.
FLAGS = ("blurry", "too_dark", "too_bright", "low_information", "extreme_aspect", "grayscale")
Flag = Literal["blurry", "too_dark", "too_bright", "low_information", "extreme_aspect", "grayscale"]
# Colour checks read a thumbnail: whether an image has colour does not need every pixel.
COLOUR_SIDE = 64


def _laplacian_variance(grey: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian: low when an image has no sharp edges."""
    if min(grey.shape) < 3:
        return 0.0
    centre = grey[1:-1, 1:-1]
    laplacian = grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:] - 4 * centre
    return float(laplacian.var())


def _entropy(grey: Image.Image) -> float:
    """Shannon entropy of the grey-level histogram, in bits (0 for a constant image, 8 at most)."""
    counts = np.asarray(grey.histogram(), dtype=np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def _colourfulness(image: Image.Image) -> float:
    """Mean spread between the largest and smallest of R, G, B (0 for a grey image)."""
    if image.mode in ("1", "L", "LA", "I", "I;16", "F"):
        return 0.0
    small = image.convert("RGB")
    small.thumbnail((COLOUR_SIDE, COLOUR_SIDE))
    pixels = np.asarray(small, dtype=np.int16)
    return float((pixels.max(axis=2) - pixels.min(axis=2)).mean())


def measure(image: Image.Image) -> dict[str, float]:
    """The measures behind every flag, for the decoded (not yet resized) image."""
    grey_image = image.convert("L")
    grey = np.asarray(grey_image, dtype=np.float32)
    width, height = image.size
    return {
        "sharpness": round(_laplacian_variance(grey), 3),
        "brightness": round(float(grey.mean()), 3),
        "entropy": round(_entropy(grey_image), 4),
        "aspect": round(max(width, height) / max(1, min(width, height)), 4),
        "colourfulness": round(_colourfulness(image), 3),
    }


def flags(measures: dict[str, float], thresholds) -> list[str]:
    """The flags ``measures`` raise under ``thresholds`` (a QualityParams), in FLAGS order.

    ``grayscale`` here means "has no colour"; the report keeps it only where most images do.
    """
    raised = {
        "blurry": measures["sharpness"] < thresholds.blurry_below,
        "too_dark": measures["brightness"] < thresholds.dark_below,
        "too_bright": measures["brightness"] > thresholds.bright_above,
        "low_information": measures["entropy"] < thresholds.entropy_below,
        "extreme_aspect": measures["aspect"] > thresholds.aspect_above,
        "grayscale": measures["colourfulness"] < thresholds.colourless_below,
    }
    return [name for name in FLAGS if raised[name]]

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
# Colour checks read large images box-reduced to about this many pixels on the shorter side.
COLOUR_SIDE = 64


def _laplacian_variance(grey: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian: low when an image has no sharp edges.

    ``grey`` holds integer levels (int16). The variance comes from exact integer sums, so the
    figure does not depend on summation order, SIMD width or machine (float32 sums did).
    """
    if min(grey.shape) < 3:
        return 0.0
    centre = grey[1:-1, 1:-1]
    laplacian = grey[:-2, 1:-1] + grey[2:, 1:-1]
    laplacian += grey[1:-1, :-2]
    laplacian += grey[1:-1, 2:]
    laplacian -= 4 * centre
    count = laplacian.size
    total = int(laplacian.sum(dtype=np.int64))
    # einsum, not a matrix product: BLAS threads cost far more than they save on one image.
    squares = int(np.einsum("ij,ij->", laplacian, laplacian, dtype=np.int64))
    return (squares - total * total / count) / count


def _histogram_measures(grey: Image.Image) -> tuple[float, float]:
    """Mean grey level and Shannon entropy of the grey-level histogram, in bits.

    Both from one histogram: the mean is exact, and entropy is 0 for a constant image and 8
    at most.
    """
    counts = np.asarray(grey.histogram(), dtype=np.int64)
    total = int(counts.sum())
    mean = int((counts * np.arange(256)).sum()) / total
    p = counts[counts > 0] / total
    return mean, float(-(p * np.log2(p)).sum())


def _colourfulness(image: Image.Image) -> float:
    """Mean spread between the largest and smallest of R, G, B (0 for a grey image).

    Large images are box-reduced to about COLOUR_SIDE pixels on their shorter side first:
    whether an image has colour does not need every pixel. Integer arithmetic throughout.
    """
    if image.mode in ("1", "L", "LA", "I", "I;16", "F"):
        return 0.0
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    factor = min(rgb.size) // COLOUR_SIDE
    if factor > 1:
        rgb = rgb.reduce(factor)
    pixels = np.asarray(rgb)
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    spread = np.maximum(np.maximum(red, green), blue)
    spread -= np.minimum(np.minimum(red, green), blue)
    return float(spread.sum(dtype=np.int64)) / spread.size


def measure(image: Image.Image) -> dict[str, float]:
    """The measures behind every flag, for the decoded (not yet resized) image."""
    grey_image = image if image.mode == "L" else image.convert("L")
    brightness, entropy = _histogram_measures(grey_image)
    width, height = image.size
    return {
        "sharpness": round(_laplacian_variance(np.asarray(grey_image).astype(np.int16)), 3),
        "brightness": round(brightness, 3),
        "entropy": round(entropy, 4),
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

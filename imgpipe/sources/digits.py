"""The default source: scikit-learn's 8x8 handwritten digits, written as PNG files one folder
per class, so the pipeline runs with no network at all."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from imgpipe.sources.common import Source, SourceParams, class_folder_items

DIGITS_MAX = 16  # scikit-learn's digits hold ink levels 0..16


class DigitsParams(SourceParams):
    source: Literal["digits"] = "digits"


def fetch(params: DigitsParams, out_dir: Path, downloads_dir: Path) -> dict[str, object]:
    """Write scikit-learn's digits as PNG files under ``out_dir/images/<class>/``."""
    from sklearn.datasets import load_digits  # imported here: only this source needs it

    digits = load_digits()
    # Scale 0..16 to 0..255 with rounding, so the full grey range is used and 16 maps to 255.
    pixels = np.rint(digits.images * (255.0 / DIGITS_MAX)).astype(np.uint8)
    class_names = [str(name) for name in digits.target_names]
    for name in class_names:
        (out_dir / "images" / name).mkdir(parents=True)
    for index, (image, target) in enumerate(zip(pixels, digits.target, strict=True)):
        path = out_dir / "images" / class_names[target] / f"digit-{index:04d}.png"
        Image.fromarray(image, mode="L").save(path, format="PNG", compress_level=6)
    return {
        "kind": "digits",
        "url": None,
        "path": "sklearn.datasets.load_digits",
        "sha256": hashlib.sha256(
            pixels.tobytes() + digits.target.astype(np.int64).tobytes()
        ).hexdigest(),
        "size": len(pixels),
        "class_names": class_names,
        "layout": "class_folders",
        "root": "images",
    }


SOURCE = Source("digits", DigitsParams, fetch, class_folder_items)

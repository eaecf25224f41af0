"""Decoding and standardizing images: the one function used by ``prepare`` and by ``predict``.

Keeping a single implementation means a model never sees pixels prepared differently at
serving time than at training time.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageFile, ImageOps

# Truncated files must fail loudly, never be padded with grey and trained on.
ImageFile.LOAD_TRUNCATED_IMAGES = False

RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "hamming": Image.Resampling.HAMMING,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


class ImageRejected(ValueError):
    """An input file that cannot become a training image; the message is the reason."""


@dataclass(frozen=True)
class Standard:
    """What every image is turned into. Saved beside the model so ``predict`` repeats it."""

    width: int
    height: int
    color: Literal["grayscale", "rgb"] = "grayscale"
    resample: str = "lanczos"

    @property
    def channels(self) -> int:
        return 1 if self.color == "grayscale" else 3

    @property
    def mode(self) -> str:
        return "L" if self.color == "grayscale" else "RGB"

    def to_dict(self) -> dict[str, object]:
        return {
            "width": self.width,
            "height": self.height,
            "color": self.color,
            "resample": self.resample,
            "channels": self.channels,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Standard:
        return cls(
            width=int(data["width"]),
            height=int(data["height"]),
            color=data["color"],  # type: ignore[arg-type]
            resample=str(data["resample"]),
        )


def decode(data: bytes) -> Image.Image:
    """Fully decode ``data`` and apply its EXIF orientation; raise ImageRejected with a reason."""
    if not data:
        raise ImageRejected("empty file")
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        return ImageOps.exif_transpose(image)
    except Image.DecompressionBombError as err:
        raise ImageRejected(f"too many pixels (decompression bomb guard): {err}") from None
    except Image.UnidentifiedImageError:
        raise ImageRejected("not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageRejected(f"corrupt or truncated image: {err}") from None


def to_mode(image: Image.Image, mode: str) -> Image.Image:
    """Convert to L or RGB, compositing any transparency on white instead of dropping it."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert(mode)


def standardize(image: Image.Image, standard: Standard) -> Image.Image:
    """Colour mode and size of ``standard``; the result is always a fresh image."""
    image = to_mode(image, standard.mode)
    size = (standard.width, standard.height)
    if image.size != size:
        image = image.resize(size, RESAMPLE[standard.resample])
    return image


def encode_png(image: Image.Image) -> bytes:
    """Lossless, deterministic encoding: no metadata, fixed compression level."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def decode_png_array(data: bytes) -> np.ndarray:
    """Pixels of a shard image as HxWxC uint8, the layout the model takes."""
    array = np.asarray(Image.open(io.BytesIO(data)))
    return array[..., None] if array.ndim == 2 else array

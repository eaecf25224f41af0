"""A contact sheet of standardized images, one row per class, for people to look at.

Numbers in a report cannot show that every image came out upside down or letterboxed in the
wrong colour; one picture of a few samples per class does.
"""

from __future__ import annotations

import io

from PIL import Image, ImageDraw, ImageFont

TILE = 64  # pixels on the longer side of each sample in the sheet
GAP = 4
LABEL_WIDTH = 120
BACKGROUND = (40, 40, 40)
TEXT = (235, 235, 235)


def _tile(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png)).convert("RGB")
    factor = TILE / max(image.size)
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    # Nearest keeps small images' pixels visible as they are; large ones are shrunk smoothly.
    method = Image.Resampling.NEAREST if factor >= 1 else Image.Resampling.LANCZOS
    return image.resize(size, method)


def contact_sheet(rows: list[tuple[str, list[bytes]]], columns: int) -> bytes:
    """A PNG with one row per (label, encoded images), up to ``columns`` images a row."""
    height = GAP + len(rows) * (TILE + GAP)
    width = LABEL_WIDTH + columns * (TILE + GAP) + GAP
    sheet = Image.new("RGB", (width, max(height, TILE + 2 * GAP)), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for row, (label, images) in enumerate(rows):
        top = GAP + row * (TILE + GAP)
        draw.text((GAP, top + TILE // 2 - 6), label[:18], fill=TEXT, font=font)
        for column, png in enumerate(images[:columns]):
            tile = _tile(png)
            left = LABEL_WIDTH + column * (TILE + GAP)
            sheet.paste(tile, (left + (TILE - tile.width) // 2, top + (TILE - tile.height) // 2))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()

"""Decoding and standardizing images: the one function used by ``prepare`` and by ``predict``.

Keeping a single implementation means a model never sees pixels prepared differently at
serving time than at training time: ``standardize_bytes(data, standard)`` turns the bytes of
any image file into the image the model takes, and ``Standard`` (saved beside the model)
holds every setting that changes a pixel.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
from PIL import EpsImagePlugin, ExifTags, Image, ImageCms, ImageColor, ImageFile, ImageOps
from pydantic import AfterValidator, BeforeValidator
from pydantic.dataclasses import dataclass as validated_dataclass

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

# Weights of R, G and B in a grey level.
LUMA = {
    # ITU-R BT.601, what JPEG's Y channel and Pillow's convert("L") use.
    "bt601": (0.299, 0.587, 0.114),
    # ITU-R BT.709 as scikit-image's rgb2gray rounds them (and the dogs-vs-cats tutorial used).
    "bt709": (0.2125, 0.7154, 0.0721),
    "mean": (1 / 3, 1 / 3, 1 / 3),
}

FITS = ("stretch", "crop", "pad")
COLORS = ("grayscale", "rgb")

# JPEG draft mode (DCT scaling) may shrink the decode by 2, 4 or 8 only while the decoded image
# stays at least this many times the target size, so the final resize still filters properly.
# The same margin as Pillow's own thumbnail(); tests measure how close it stays to a full decode.
DRAFT_MARGIN = 2.0
DRAFT_FORMATS = {"JPEG", "MPO"}  # MPO: the multi-picture JPEG some cameras write

ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
# Modes where a "transparency" entry (a palette index or a colour key) makes pixels see-through.
KEYED_MODES = {"P", "L", "RGB", "1"}
SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
ORIENTATION_TAG = ExifTags.Base.Orientation
# EXIF orientations 5-8 turn the picture by 90 degrees: stored width is displayed height.
QUARTER_TURNS = {5, 6, 7, 8}

# The most pixels one file may decode to (after JPEG DCT scaling), checked from the header
# before any pixel memory is taken. Pillow's own limit (about 89 MP) lets a file of a few hundred
# bytes claiming 84 MP cost some 650 MB; 50 MP (an 8192x6144 camera frame) still takes any
# photo, and bounds a worker at about 200 MB of RGB pixels plus the copies standardizing makes.
MAX_DECODED_PIXELS = 50_000_000
# zlib's deflate shrinks data at most about 1032:1, so a PNG shorter than its raw pixel rows over
# this ratio cannot hold them: it is cut off, and is rejected before its pixel memory is taken.
DEFLATE_MAX_RATIO = 1032
# Formats Pillow identifies but decodes only with a plugin registered by the application.
PLUGIN_FORMATS = {"WMF": "WMF/EMF", "GRIB": "GRIB", "BUFR": "BUFR", "HDF5": "HDF5"}
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))

Color = tuple[int, int, int]
Luma = str | tuple[float, float, float]


class ImageRejected(ValueError):
    """An input file that cannot become a training image; the message is the reason.

    ``kind`` is a short stable code (empty, not_image, truncated, corrupt, too_large, too_small,
    unsupported) so reports can count rejections by cause. ``unsupported`` is a real file of a
    format Pillow knows but cannot decode here; its reason names what is missing.
    """

    def __init__(self, reason: str, kind: str = "corrupt") -> None:
        super().__init__(reason)
        self.kind = kind


@dataclass(frozen=True)
class Rejection:
    """Why a file gives no image: ``reason`` for people, ``kind`` as in ImageRejected."""

    reason: str
    kind: str


def _damaged(err: BaseException, what: str) -> ImageRejected:
    # Pillow says "truncated" (in varying case) whenever the data stops before the image does,
    # from whichever reader got there first: the header parser, the PNG verifier or a decoder.
    if "truncated" in str(err).lower():
        return ImageRejected(
            f"truncated file: the data ends before the image does ({err})", "truncated"
        )
    return ImageRejected(f"{what}: {err}", "corrupt")


def parse_color(value: str | int | tuple[int, ...] | list[int]) -> Color:
    """An RGB triple from a CSS-style name or hex string, a grey level, or three levels."""
    if isinstance(value, str):
        try:
            rgb = ImageColor.getrgb(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a colour name or #rrggbb") from None
        return (rgb[0], rgb[1], rgb[2])
    if isinstance(value, int):
        value = (value, value, value)
    levels = tuple(value)
    if len(levels) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in levels):
        raise ValueError(f"{value!r}: give three levels 0-255, a grey level, or a colour name")
    return (int(levels[0]), int(levels[1]), int(levels[2]))


def luma_weights(luma: Luma) -> tuple[float, float, float]:
    if isinstance(luma, str):
        if luma not in LUMA:
            raise ValueError(f"unknown luma {luma!r}; known: {', '.join(LUMA)}")
        return LUMA[luma]
    weights = tuple(float(w) for w in luma)
    if len(weights) != 3 or min(weights) < 0 or abs(sum(weights) - 1) > 0.01:
        raise ValueError(f"luma weights {luma!r} must be three non-negative numbers summing to 1")
    return (weights[0], weights[1], weights[2])


def _checked_luma(luma: Luma) -> Luma:
    luma_weights(luma)
    return luma


# The choices of the image standard, built from the tables above that carry them out, so the
# params that name them (PrepareParams) and the code that applies them cannot disagree.
ColorMode = Literal[COLORS]  # type: ignore[valid-type]
Fit = Literal[FITS]  # type: ignore[valid-type]
Resample = Literal[tuple(RESAMPLE)]  # type: ignore[valid-type]
LumaChoice = Annotated[
    Literal[tuple(LUMA)] | tuple[float, float, float],  # type: ignore[valid-type]
    AfterValidator(_checked_luma),
]
ColorValue = Annotated[Color, BeforeValidator(parse_color)]


def _width_and_height(size: object) -> object:
    # One number is the commonest mistake; say exactly what to write instead.
    if isinstance(size, int | float | str) and not isinstance(size, bool):
        raise ValueError(f"give width and height as a list, e.g. [{size}, {size}]")
    return size


def pixel_size(most: int):
    """The type of a param giving (width, height) in pixels, each from 1 to ``most``."""

    def within(size: tuple[int, int]) -> tuple[int, int]:
        if min(size) < 1 or max(size) > most:
            raise ValueError(f"width and height must be between 1 and {most}")
        return size

    return Annotated[tuple[int, int], BeforeValidator(_width_and_height), AfterValidator(within)]


@validated_dataclass(frozen=True)
class Standard:
    """What every image is turned into. Saved beside the model so ``predict`` repeats it.

    Its fields are checked against the choices above when it is made, whether from params or
    from a model's ``preprocessing.json``.
    """

    width: int
    height: int
    color: ColorMode = "grayscale"
    resample: Resample = "lanczos"
    fit: Fit = "stretch"
    fill: ColorValue = (0, 0, 0)  # the bars of ``pad``
    background: ColorValue = (255, 255, 255)  # what transparent pixels are composited on
    luma: LumaChoice = "bt601"
    draft: bool = True  # JPEG DCT scaling where it stays within tolerance of a full decode

    @property
    def channels(self) -> int:
        return 1 if self.color == "grayscale" else 3

    @property
    def mode(self) -> str:
        return "L" if self.color == "grayscale" else "RGB"

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)

    def to_dict(self) -> dict[str, object]:
        return {
            "width": self.width,
            "height": self.height,
            "color": self.color,
            "resample": self.resample,
            "channels": self.channels,
            "fit": self.fit,
            "fill": list(self.fill),
            "background": list(self.background),
            "luma": self.luma if isinstance(self.luma, str) else list(self.luma),
            "draft": self.draft,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Standard:
        """Read ``to_dict`` output; keys missing from older files take the old behaviour."""
        # Files written before draft decoding existed were made without it.
        known = {"draft": False, **data}
        return cls(**{name: known[name] for name in cls.__dataclass_fields__ if name in known})


@dataclass(frozen=True)
class Source:
    """What a file turned out to hold, for reports: its real format, mode, size and quirks."""

    format: str
    mode: str
    size: tuple[int, int]
    frames: int = 1
    orientation: int = 1
    transparency: bool = False  # a palette or colour-key transparency, besides alpha modes
    draft_scale: int = 1  # 1 = full decode; 2, 4, 8 = JPEG DCT scaling
    icc: str = ""  # "converted": an embedded ICC profile was applied; "ignored": it was unusable


def _open(data: bytes) -> Image.Image:
    """Read the header only; a file over Pillow's decompression-bomb limit is rejected here."""
    if not data:
        raise ImageRejected("empty file", "empty")
    with warnings.catch_warnings():
        # Pillow only warns between its limit and twice the limit; both are refused.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise ImageRejected(
                f"over Pillow's decompression-bomb limit of {Image.MAX_IMAGE_PIXELS} pixels: {err}",
                "too_large",
            ) from None
        except Image.UnidentifiedImageError:
            raise ImageRejected("not an image Pillow can read", "not_image") from None
        except NotImplementedError as err:
            # Pillow knows the format (DDS's many FourCC/DXGI codes) but not this variant of it.
            what = "DDS variant" if data.startswith(b"DDS ") else "variant of its format"
            raise ImageRejected(
                f"this {what} is not implemented in Pillow: {err}", "unsupported"
            ) from None
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            raise _damaged(err, "corrupt image header") from None


def _check_decodable(image: Image.Image) -> None:
    """Reject, before the size checks, files Pillow identifies but cannot decode on this machine.

    Their stubs report sizes such as 0x0 or fail with "corrupt"-looking errors, which would send
    people looking for damage in a valid file.
    """
    fmt = image.format or ""
    if fmt == "EPS" and not EpsImagePlugin.has_ghostscript():
        raise ImageRejected(
            "EPS is rendered by Ghostscript, which is not installed (no gs on PATH)", "unsupported"
        )
    # A stub decodes only through a handler the application registers with its plugin.
    if isinstance(image, ImageFile.StubImageFile) and getattr(image, "_handler", None) is None:
        name = PLUGIN_FORMATS.get(fmt, fmt)
        raise ImageRejected(
            f"{name} is only identified by Pillow; decoding it needs a {name} plugin, "
            "which is not installed",
            "unsupported",
        )


def _check_pixel_budget(image: Image.Image, data: bytes) -> None:
    """Refuse, from the header alone, files whose decoding would take unbounded memory."""
    width, height = image.size
    if width * height > MAX_DECODED_PIXELS:
        raise ImageRejected(
            f"{width}x{height} pixels is over the limit of {MAX_DECODED_PIXELS} pixels per image",
            "too_large",
        )
    if image.format == "PNG":
        # The fewest bits per pixel each mode can be stored with (grey and palette go down to 1).
        bits = {"LA": 16, "RGB": 24, "RGBA": 32, "I;16": 16, "I;16B": 16}.get(image.mode, 1)
        raw = height * (1 + -(-width * bits // 8))
        if len(data) * DEFLATE_MAX_RATIO < raw:
            raise ImageRejected(
                f"truncated file: the data ends before the image does ({len(data)} bytes cannot "
                f"hold {width}x{height} pixels even at deflate's best ratio)",
                "truncated",
            )


def _to_srgb(image: Image.Image) -> tuple[Image.Image, str]:
    """Pixels converted from the file's embedded ICC profile to sRGB, and what was done.

    Shards hold pixels only: the profile is applied here, then left behind, so every stored
    image means the same colours and nothing downstream has to read profiles.
    """
    icc = image.info.get("icc_profile")
    if not icc:
        return image, ""
    grey = image.mode in ("1", "L", "LA", "La")
    alpha = None
    try:
        if image.mode in SIXTEEN_BIT_MODES or image.mode == "F":
            raise ValueError("littlecms is not given 16-bit or float pixels here")
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        base = image
        if image.mode in ALPHA_MODES or _has_key_transparency(image):
            # Transparency is kept apart for _flatten, which composites it afterwards.
            with_alpha = image.convert("LA" if grey else "RGBA")
            alpha = with_alpha.getchannel("A")
            base = with_alpha.convert("L" if grey else "RGB")
        elif image.mode not in ("L", "RGB", "CMYK"):
            base = image.convert("L" if grey else "RGB")
        converted = ImageCms.profileToProfile(base, profile, SRGB, outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        # A broken or mismatched profile: the stored values are all there is, as in a browser.
        image.info.pop("icc_profile", None)
        return image, "ignored"
    assert converted is not None
    converted.info.pop("icc_profile", None)  # littlecms attaches the sRGB profile it used
    if alpha is not None:
        converted.putalpha(alpha)
    return converted, "converted"


def _check_png_checksums(data: bytes) -> None:
    # Pillow's decoder does not check the CRC of pixel chunks, so a flipped bit in a PNG would
    # decode to wrong pixels without complaint; verify() checks every chunk.
    try:
        Image.open(io.BytesIO(data)).verify()
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise _damaged(err, "corrupt PNG (chunk checksum)") from None


def _has_key_transparency(image: Image.Image) -> bool:
    return image.mode in KEYED_MODES and "transparency" in image.info


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # a broken EXIF block must not cost the picture
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def draft_scale(source_size: tuple[int, int], standard: Standard, orientation: int = 1) -> int:
    """The largest DCT reduction (1, 2, 4 or 8) that keeps DRAFT_MARGIN over the final resize."""
    width, height = source_size
    if orientation in QUARTER_TURNS:
        width, height = height, width
    shrink_x, shrink_y = width / standard.width, height / standard.height
    # stretch and crop scale the tighter axis to fit exactly; pad keeps the whole image inside.
    shrink = max(shrink_x, shrink_y) if standard.fit == "pad" else min(shrink_x, shrink_y)
    for scale in (8, 4, 2):
        if shrink / scale >= DRAFT_MARGIN:
            return scale
    return 1


def _apply_draft(image: Image.Image, standard: Standard, orientation: int) -> int:
    if image.format not in DRAFT_FORMATS or not standard.draft:
        return 1
    scale = draft_scale(image.size, standard, orientation)
    # Decoding straight to grey skips the colour conversion; JPEG's Y is BT.601 luma. Not with
    # an ICC profile: that applies to the colours, so they must be decoded first.
    straight_to_grey = standard.mode == "L" and standard.luma == "bt601"
    mode = "L" if straight_to_grey and not image.info.get("icc_profile") else image.mode
    if scale == 1 and mode == image.mode:
        return 1
    width, height = image.size
    image.draft(mode, (width // scale, height // scale))
    return scale


def decode_source(
    data: bytes, standard: Standard | None = None, min_side: int = 1
) -> tuple[Image.Image, Source]:
    """Fully decode ``data``, upright by its EXIF orientation, with what the file held.

    With a ``standard`` that allows it, a JPEG is decoded at a reduced scale (DCT scaling):
    every byte is still decoded, so a truncated file still fails. Raises ImageRejected.
    """
    image = _open(data)
    _check_decodable(image)
    width, height = image.size
    if min(width, height) < min_side:
        raise ImageRejected(
            f"{width}x{height} pixels is below prepare.min_side={min_side}", "too_small"
        )
    if image.format == "PNG":
        _check_png_checksums(data)
    orientation = _orientation(image)
    info = {
        "format": image.format or "unknown",
        "mode": image.mode,
        "size": (width, height),
        "frames": int(getattr(image, "n_frames", 1)),
        "orientation": orientation,
        "transparency": _has_key_transparency(image),
    }
    scale = _apply_draft(image, standard, orientation) if standard else 1
    _check_pixel_budget(image, data)  # after draft: the size that will really be decoded
    try:
        image.load()  # the first frame of an animation
        if orientation != 1:
            image = ImageOps.exif_transpose(image)
        # After the turn, which reads the EXIF that the converted image no longer carries.
        image, info["icc"] = _to_srgb(image)
    except Image.DecompressionBombError as err:
        raise ImageRejected(f"over Pillow's decompression-bomb limit: {err}", "too_large") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as err:
        raise _damaged(err, "corrupt image data") from None
    return image, Source(**info, draft_scale=scale)  # type: ignore[arg-type]


def decode(data: bytes, standard: Standard | None = None, min_side: int = 1) -> Image.Image:
    """Fully decode ``data`` and apply its EXIF orientation; raise ImageRejected with a reason."""
    return decode_source(data, standard, min_side)[0]


def _sixteen_bit_to_l(image: Image.Image) -> Image.Image:
    # convert("L") clips 16-bit levels at 255, leaving a few greys; scale 0..65535 to 0..255.
    levels = np.asarray(image).astype(np.int64)
    scaled = (np.clip(levels, 0, 65535) * 255 + 32767) // 65535
    return Image.fromarray(scaled.astype(np.uint8), mode="L")


def _flatten(image: Image.Image, background: Color) -> Image.Image:
    """L or RGB pixels: alpha composited on ``background``, other modes converted exactly."""
    mode = image.mode
    if mode in ALPHA_MODES or _has_key_transparency(image):
        rgba = image.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(base, rgba).convert("RGB")
    if mode in ("L", "RGB"):
        return image
    if mode in SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_l(image)
    if mode == "1":
        return image.convert("L")
    if mode == "F":
        raise ImageRejected("32-bit float pixels have no agreed range to scale", "unsupported")
    try:
        return image.convert("RGB")  # P, CMYK, YCbCr, RGBX, HSV
    except ValueError:
        raise ImageRejected(
            f"colour mode {mode} cannot be converted to RGB", "unsupported"
        ) from None


def _to_gray(image: Image.Image, luma: Luma) -> Image.Image:
    if luma == "bt601":
        return image.convert("L")  # Pillow's exact integer BT.601
    r, g, b = luma_weights(luma)
    return image.convert("L", matrix=(r, g, b, 0.0))


def to_mode(image: Image.Image, standard: Standard) -> Image.Image:
    """The standard's colour mode: L by its luma weights, or RGB."""
    flat = _flatten(image, standard.background)
    if standard.mode == "RGB":
        return flat if flat.mode == "RGB" else flat.convert("RGB")
    return flat if flat.mode == "L" else _to_gray(flat, standard.luma)


def _fill_in_mode(standard: Standard) -> int | Color:
    if standard.mode == "RGB":
        return standard.fill
    return _to_gray(Image.new("RGB", (1, 1), standard.fill), standard.luma).getpixel((0, 0))  # type: ignore[return-value]


def fit_to_size(image: Image.Image, standard: Standard) -> Image.Image:
    """Resize to the standard's size: stretched, centre-cropped or letterboxed."""
    size, method = standard.size, RESAMPLE[standard.resample]
    if standard.fit == "crop":
        return ImageOps.fit(image, size, method)
    if standard.fit == "pad":
        return ImageOps.pad(image, size, method, color=_fill_in_mode(standard))
    return image if image.size == size else image.resize(size, method)


def standardize(image: Image.Image, standard: Standard) -> Image.Image:
    """Colour mode and size of ``standard``, from an already decoded image."""
    return fit_to_size(to_mode(image, standard), standard)


def standardize_bytes(
    data: bytes, standard: Standard, min_side: int = 1
) -> tuple[Image.Image, Source]:
    """The image file ``data`` as the model takes it, and what the file held.

    The one path from file bytes to model pixels, for ``prepare`` and ``predict`` alike.
    """
    image, source, _ = standardize_keeping_decoded(data, standard, min_side)
    return image, source


def standardize_keeping_decoded(
    data: bytes, standard: Standard, min_side: int = 1
) -> tuple[Image.Image, Source, Image.Image]:
    """``standardize_bytes``, and the decoded image before resizing (for quality measures)."""
    with warnings.catch_warnings():
        # Pillow warns about quirks this function handles (palette transparency, odd EXIF);
        # thousands of such lines would bury the messages that matter.
        warnings.filterwarnings("ignore", category=UserWarning, module="PIL")
        image, source = decode_source(data, standard, min_side)
        return standardize(image, standard), source, image


def standardize_file(
    data: bytes, standard: Standard, min_side: int = 1, keep_decoded: bool = False
) -> tuple[Image.Image, Source] | tuple[Image.Image, Source, Image.Image] | Rejection:
    """``standardize_bytes``, or the Rejection of a file it cannot use: never an exception.

    For ``prepare`` and ``predict`` alike, so one malformed file is reported with its reason
    and the files after it are still read. With ``keep_decoded`` the decoded image comes third.
    """
    try:
        standardized = standardize_keeping_decoded(data, standard, min_side)
        return standardized if keep_decoded else standardized[:2]
    except ImageRejected as err:
        return Rejection(str(err), err.kind)
    except Exception as err:
        # Pillow's format plugins can fail on malformed files in ways no list of exceptions
        # covers; the reason then names the error so it can be looked into.
        return Rejection(f"cannot decode: {type(err).__name__}: {err}", "corrupt")


def encode_png(image: Image.Image, level: int = 6) -> bytes:
    """Lossless, deterministic encoding: pixels only, no metadata, fixed compression settings.

    ``icc_profile=None``: Pillow would otherwise copy a source's profile along from
    ``image.info`` (the pixels are already sRGB, see ``_to_srgb``). Text and EXIF chunks are
    written only when asked for, and never are.

    ``level`` is zlib's compression level: lower is faster, the pixels are the same. Level 0
    (``STORED``) writes an uncompressed PNG by hand (see ``stored_png``). For levels 1-9,
    zlib's run-length strategy encodes small photos about twice as fast as its default for
    files a few percent larger.
    """
    if level == STORED and image.mode in STORED_CHANNELS:
        return stored_png(image)
    buffer = io.BytesIO()
    image.save(
        buffer, format="PNG", compress_level=level, compress_type=zlib.Z_RLE, icc_profile=None
    )
    return buffer.getvalue()


STORED = 0
# PNG colour types of the modes stored_png writes: 0 grey, 2 truecolour.
STORED_CHANNELS = {"L": (0, 1), "RGB": (2, 3)}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DEFLATE_STORED_MAX = 65535  # the most bytes one stored deflate block holds


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def stored_png(image: Image.Image) -> bytes:
    """An 8-bit grey or RGB PNG whose pixel data is deflate's "stored" blocks: no compression.

    Measured on 64x64 RGB photo crops: about 10 us against 300 us for zlib at level 1, for
    files about 1.5 times as large; at 32x32 grey, 1.2 times. Every byte is fixed by the
    pixels alone (the checksums are CRC-32 and Adler-32, the same in every zlib), so the
    shards no longer depend on which zlib a Pillow build bundles, and readers (Pillow,
    tf.io.decode_png, any viewer) only copy the rows out instead of inflating them.
    """
    color_type, channels = STORED_CHANNELS[image.mode]
    width, height = image.size
    rows = np.zeros((height, width * channels + 1), dtype=np.uint8)  # column 0: filter "none"
    rows[:, 1:] = np.asarray(image).reshape(height, width * channels)
    raw = rows.tobytes()
    blocks = [b"\x78\x01"]  # zlib header: deflate, 32 KB window, no preset dictionary
    for start in range(0, max(len(raw), 1), DEFLATE_STORED_MAX):
        block = raw[start : start + DEFLATE_STORED_MAX]
        final = start + DEFLATE_STORED_MAX >= len(raw)
        blocks.append(struct.pack("<BHH", final, len(block), len(block) ^ 0xFFFF) + block)
    blocks.append(struct.pack(">I", zlib.adler32(raw)))
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"".join(
        (
            PNG_SIGNATURE,
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", b"".join(blocks)),
            _png_chunk(b"IEND", b""),
        )
    )


def model_array(image: Image.Image) -> np.ndarray:
    """Pixels as HxWxC uint8, the layout the model takes (C = 1 for grey)."""
    array = np.asarray(image)
    return array[..., None] if array.ndim == 2 else array


def decode_png_array(data: bytes) -> np.ndarray:
    """Pixels of a shard image as HxWxC uint8, the layout the model takes."""
    return model_array(Image.open(io.BytesIO(data)))

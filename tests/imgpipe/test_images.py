import io
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import BmpImagePlugin, EpsImagePlugin, Image, ImageCms

from benchmarks.corpus import corpus_jpeg
from imgpipe.images import (
    DRAFT_MARGIN,
    ImageRejected,
    Rejection,
    Standard,
    decode,
    decode_png_array,
    decode_source,
    draft_scale,
    encode_png,
    parse_color,
    standardize,
    standardize_bytes,
    standardize_file,
)


def encoded(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def pixels(data: bytes, **standard) -> np.ndarray:
    image, _ = standardize_bytes(data, Standard(**standard))
    return np.asarray(image)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a size in its header; Pillow judges it before reading any pixels."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload)
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


def top_bright_bottom_dark(width: int, height: int) -> Image.Image:
    array = np.zeros((height, width, 3), np.uint8)
    array[: height // 2] = 255
    return Image.fromarray(array)


# --- orientation, colour modes, bit depth --------------------------------------------------


@pytest.mark.parametrize(
    ("orientation", "stored_as"),
    [
        (3, Image.Transpose.ROTATE_180),
        (6, Image.Transpose.ROTATE_90),  # camera turned: stored on its side, shown upright
        (8, Image.Transpose.ROTATE_270),
    ],
)
@pytest.mark.parametrize("draft", [False, True])
def test_exif_orientation_is_applied(orientation, stored_as, draft):
    upright = top_bright_bottom_dark(64, 128)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encoded(upright.transpose(stored_as), "JPEG", quality=95, exif=exif.tobytes())
    out = pixels(data, width=8, height=16, color="grayscale", draft=draft)
    assert out.shape == (16, 8)
    assert out[:6].mean() > 230 and out[-6:].mean() < 25
    assert decode_source(data)[1].orientation == orientation


def test_sixteen_bit_gradient_keeps_its_levels():
    gradient = np.tile(np.linspace(0, 65535, 256).round().astype(np.uint16), (4, 1))
    data = encoded(Image.fromarray(gradient))
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
    grey = pixels(data, width=256, height=4, color="grayscale")
    assert len(np.unique(grey)) == 256
    assert grey[0, 0] == 0 and grey[0, -1] == 255 and np.all(np.diff(grey[0].astype(int)) > 0)
    rgb = pixels(data, width=256, height=4, color="rgb")
    assert np.array_equal(rgb[..., 1], grey)


def test_cmyk_comes_out_in_rgb():
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # full magenta and yellow ink: red
    assert tuple(pixels(encoded(cmyk, "TIFF"), width=4, height=4, color="rgb")[0, 0]) == (
        255,
        0,
        0,
    )
    from_jpeg = pixels(encoded(cmyk, "JPEG", quality=95), width=4, height=4, color="rgb")
    assert np.abs(from_jpeg.astype(int) - (255, 0, 0)).max() <= 6


def test_palette_transparency_is_composited_on_the_background():
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    image.paste(1, (0, 0, 8, 4))  # top half green, bottom half index 0, transparent
    data = encoded(image, "GIF", transparency=0)
    out = pixels(data, width=8, height=8, color="rgb", background=(255, 0, 255))
    assert tuple(out[0, 0]) == (0, 255, 0)
    assert tuple(out[-1, -1]) == (255, 0, 255)
    assert decode_source(data)[1].transparency


def test_grey_with_alpha_is_composited():
    grey = Image.new("L", (8, 8), 0)
    alpha = Image.new("L", (8, 8), 0)
    alpha.paste(255, (0, 0, 8, 4))
    data = encoded(Image.merge("LA", (grey, alpha)))
    out = pixels(data, width=8, height=8, color="grayscale", background=(200, 200, 200))
    assert out[0, 0] == 0 and out[-1, -1] == 200


def test_rgba_is_composited_on_the_chosen_background_before_resizing():
    image = Image.new("RGBA", (16, 16), (255, 0, 0, 0))  # transparent, yet red underneath
    image.paste((0, 0, 255, 255), (0, 0, 16, 8))
    data = encoded(image)
    out = pixels(data, width=4, height=4, color="rgb", background=(0, 255, 0), resample="box")
    assert tuple(out[0, 0]) == (0, 0, 255)
    assert tuple(out[-1, 0]) == (0, 255, 0)  # the hidden red never bleeds in
    half = Image.new("RGBA", (4, 4), (0, 0, 0, 128))
    grey = pixels(encoded(half), width=4, height=4, background=(255, 255, 255))
    assert abs(int(grey[0, 0]) - 127) <= 1


def test_animated_images_give_their_first_frame():
    frames = [
        Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))
    ]
    for fmt in ("GIF", "WEBP", "PNG"):
        data = encoded(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100)
        image, source = standardize_bytes(data, Standard(4, 4, color="rgb"))
        assert source.frames == 3, fmt
        assert np.abs(np.asarray(image).astype(int) - (255, 0, 0)).max() <= 8, fmt


def test_png_and_webp_are_decoded_by_content_not_name():
    image = Image.new("RGB", (8, 8), (10, 20, 30))
    for fmt in ("PNG", "WEBP"):
        _, source = decode_source(encoded(image, fmt, lossless=True))
        assert source.format == fmt


# --- rejections -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"", "empty"),
        (b"just some notes\n", "not_image"),
        (b"\x00\x00\x00\x01Bud1" + bytes(2048), "not_image"),  # .DS_Store
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(2048), "not_image"),  # Thumbs.db (OLE)
        (png_header_only(10_000, 10_000), "too_large"),  # over the limit: Pillow only warns
        (png_header_only(20_000, 20_000), "too_large"),  # over twice the limit: Pillow refuses
    ],
)
def test_unusable_files_are_rejected_with_a_kind(data, kind):
    with pytest.raises(ImageRejected) as caught:
        decode(data)
    assert caught.value.kind == kind
    assert str(caught.value)


def test_truncated_and_corrupt_files_are_rejected_even_in_draft_mode():
    photo = encoded(Image.effect_noise((256, 256), 60).convert("RGB"), "JPEG")
    for standard in (None, Standard(16, 16, color="rgb")):
        with pytest.raises(ImageRejected, match="truncated") as caught:
            decode(photo[: len(photo) // 2], standard)
        assert caught.value.kind == "truncated"
    png = bytearray(encoded(Image.effect_noise((64, 64), 60)))
    png[len(png) // 2] ^= 0xFF  # inside the compressed pixel data
    with pytest.raises(ImageRejected) as caught:
        decode(bytes(png))
    assert caught.value.kind == "corrupt"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_cut_off_files_are_rejected_as_truncated(fmt):
    data = encoded(Image.effect_noise((64, 64), 60).convert("RGB"), fmt)
    # Cut inside the header, inside the pixel data, and just before the end.
    for cut in (100, len(data) // 2, len(data) - 20):
        rejected = standardize_file(data[:cut], Standard(16, 16, color="rgb"))
        assert isinstance(rejected, Rejection), cut
        assert rejected.kind == "truncated", (cut, rejected.reason)
        assert rejected.reason.startswith("truncated file: the data ends before the image does")


def test_standardize_file_turns_any_decoder_failure_into_a_rejection(monkeypatch):
    data = encoded(Image.new("RGB", (20, 20), (9, 99, 199)), "BMP")
    image, source = standardize_file(data, Standard(8, 8, color="rgb"))
    assert source.format == "BMP" and image.size == (8, 8)

    def broken_load(self):
        raise RuntimeError("plugin bug")

    # A plugin failing with an exception type no list in images.py names.
    monkeypatch.setattr(BmpImagePlugin.BmpImageFile, "load", broken_load)
    rejected = standardize_file(data, Standard(8, 8, color="rgb"))
    assert rejected == Rejection("cannot decode: RuntimeError: plugin bug", "corrupt")
    empty = standardize_file(b"", Standard(8, 8))
    assert empty == Rejection("empty file", "empty")


def test_images_below_the_minimum_side_are_rejected():
    data = encoded(Image.new("RGB", (40, 3)))
    with pytest.raises(ImageRejected, match=r"40x3.*min_side=4") as caught:
        decode(data, min_side=4)
    assert caught.value.kind == "too_small"
    assert decode(data, min_side=3).size == (40, 3)


# --- fit, colour, resampling --------------------------------------------------------------


def banded() -> bytes:
    """40x20: red bands left and right, a green square in the middle."""
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 255, 0), (10, 0, 30, 20))
    return encoded(image)


def test_fit_stretch_crop_and_pad():
    common = {"width": 20, "height": 20, "color": "rgb", "resample": "nearest"}
    stretched = pixels(banded(), **common)
    assert tuple(stretched[10, 0]) == (255, 0, 0) and tuple(stretched[10, 10]) == (0, 255, 0)
    cropped = pixels(banded(), fit="crop", **common)
    assert np.all(cropped == (0, 255, 0))
    padded = pixels(banded(), fit="pad", fill=(0, 0, 255), **common)
    assert np.all(padded[:5] == (0, 0, 255)) and np.all(padded[-5:] == (0, 0, 255))
    assert tuple(padded[10, 0]) == (255, 0, 0) and tuple(padded[10, 10]) == (0, 255, 0)
    grey_pad = pixels(
        banded(), fit="pad", fill=(0, 255, 0), luma="bt709", **{**common, "color": "grayscale"}
    )
    assert grey_pad[0, 0] == round(0.7154 * 255)


@pytest.mark.parametrize(
    ("luma", "expected"),
    [("bt601", round(0.587 * 255)), ("bt709", round(0.7154 * 255)), ((0.0, 1.0, 0.0), 255)],
)
def test_luma_weights_are_selectable(luma, expected):
    green = encoded(Image.new("RGB", (4, 4), (0, 255, 0)))
    assert pixels(green, width=4, height=4, luma=luma)[0, 0] == expected


def test_bt709_grey_matches_the_weighted_sum():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    grey = pixels(encoded(Image.fromarray(rgb)), width=8, height=8, luma="bt709")
    expected = rgb.astype(float) @ np.array([0.2125, 0.7154, 0.0721])
    assert np.abs(grey - expected).max() <= 0.51


def test_resampling_filter_is_the_one_asked_for():
    checker = np.indices((32, 32)).sum(axis=0) % 2 * 255
    data = encoded(Image.fromarray(checker.astype(np.uint8)))
    nearest = pixels(data, width=12, height=12, resample="nearest")
    lanczos = pixels(data, width=12, height=12, resample="lanczos")
    assert set(np.unique(nearest)) <= {0, 255}
    assert len(np.unique(lanczos)) > 2


# --- JPEG draft mode ------------------------------------------------------------------------


def test_draft_scale_keeps_the_margin_over_the_target():
    standard = Standard(32, 32)
    assert draft_scale((500, 375), standard) == 4  # 125x94 decoded, still 2.9x the target
    assert draft_scale((120, 90), standard) == 1
    assert draft_scale((500, 375), Standard(32, 32, fit="pad")) == 4
    assert draft_scale((4000, 3000), Standard(64, 64)) == 8
    assert draft_scale((500, 100), Standard(20, 50)) == 1
    assert draft_scale((500, 100), Standard(20, 50), orientation=6) == 2  # shown as 100x500
    for size in [(500, 375), (640, 480), (333, 499)]:
        for target in [(16, 16), (32, 32), (64, 48)]:
            scale = draft_scale(size, Standard(*target))
            assert min(size[0] / scale / target[0], size[1] / scale / target[1]) >= DRAFT_MARGIN


DRAFT_CASES = [
    {"width": 32, "height": 32, "color": "grayscale", "luma": "bt709"},
    {"width": 32, "height": 32, "color": "grayscale"},  # bt601 decodes straight to JPEG's Y
    {"width": 64, "height": 64, "color": "rgb"},
    {"width": 48, "height": 48, "color": "rgb", "fit": "crop"},
    {"width": 64, "height": 32, "color": "rgb", "fit": "pad"},
]


@pytest.fixture(scope="module")
def photo_jpegs():
    """Photo-sized JPEGs cut from the real photographs the benchmark corpus uses."""
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(array) for array in load_sample_images().images]
    rng = np.random.default_rng(5)
    return [corpus_jpeg(photos[i % 2], rng) for i in range(16)]


@pytest.mark.parametrize("case", DRAFT_CASES, ids=lambda c: "-".join(map(str, c.values())))
def test_draft_mode_stays_within_tolerance_of_a_full_decode(photo_jpegs, case):
    """Measured on these 16 photos: mean difference 0.67-1.05 levels of 255 over the cases,
    99th percentile 8-9, the worst single image's mean 3.0."""
    differences, scales = [], []
    for data in photo_jpegs:
        full, _ = standardize_bytes(data, Standard(**case, draft=False))
        quick, source = standardize_bytes(data, Standard(**case, draft=True))
        differences.append(np.abs(np.asarray(full, int) - np.asarray(quick, int)))
        scales.append(source.draft_scale)
    difference = np.stack(differences)
    assert max(scales) > 1  # the reduced decode was really used
    assert difference.mean() <= 1.5
    assert np.percentile(difference, 99) <= 12
    assert max(d.mean() for d in differences) <= 4


# --- the standard and the shard encoding ------------------------------------------------------


def test_standard_round_trips_and_reads_older_files():
    standard = Standard(
        20, 10, color="rgb", fit="pad", fill=(1, 2, 3), luma=(0.5, 0.5, 0.0), draft=True
    )
    assert Standard.from_dict(standard.to_dict()) == standard
    older = {"width": 8, "height": 8, "color": "grayscale", "resample": "lanczos", "channels": 1}
    assert Standard.from_dict(older) == Standard(8, 8, draft=False)
    with pytest.raises(ValueError, match="fit"):
        Standard(8, 8, fit="zoom")  # type: ignore[arg-type]


def test_colours_are_read_from_names_levels_and_triples():
    assert parse_color("#ff8000") == (255, 128, 0)
    assert parse_color("white") == (255, 255, 255)
    assert parse_color(7) == (7, 7, 7)
    assert parse_color([1, 2, 3]) == (1, 2, 3)
    with pytest.raises(ValueError):
        parse_color([1, 2, 300])


def test_png_encoding_is_lossless_and_deterministic():
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (9, 7, 3), dtype=np.uint8))
    assert encode_png(image) == encode_png(image.copy())
    assert np.array_equal(decode_png_array(encode_png(image)), np.asarray(image))
    grey = standardize(image, Standard(7, 9))
    assert decode_png_array(encode_png(grey)).shape == (9, 7, 1)


# --- formats Pillow knows but cannot decode here -----------------------------------------------


def _dds(fourcc: bytes) -> bytes:
    header = bytearray(128)
    header[0:4] = b"DDS "
    struct.pack_into("<7I", header, 4, 124, 0x1007, 4, 4, 0, 0, 0)
    struct.pack_into("<2I", header, 76, 32, 0x4)  # pixel format: size, DDPF_FOURCC
    header[84:88] = fourcc
    return bytes(header) + bytes(64)


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n%%EndComments\nshowpage\n%%EOF\n"
# A placeable WMF header (key, handle, bounding box, units per inch, reserved, checksum), then
# the start of the metafile header (type 1, header size 9 words, version 0x300).
WMF = (
    struct.pack("<IHhhhhHIH", 0x9AC6CDD7, 0, 0, 0, 100, 100, 1440, 0, 0)
    + b"\x01\x00\x09\x00\x00\x03"
    + bytes(12)
)
EMF = struct.pack("<II4i4i", 1, 88, 0, 0, 10, 10, 0, 0, 100, 100) + b" EMF" + bytes(52)


@pytest.mark.parametrize(
    ("data", "missing"),
    [
        (EPS, "Ghostscript"),
        (WMF, "WMF/EMF plugin"),
        (EMF, "WMF/EMF plugin"),
        (b"GRIB" + bytes(3) + b"\x01" + bytes(40), "GRIB plugin"),
        (b"BUFR" + bytes(40), "BUFR plugin"),
        (b"\x89HDF\r\n\x1a\n" + bytes(40), "HDF5 plugin"),
        (_dds(b"XYZW"), "this DDS variant"),
    ],
    ids=["eps", "wmf", "emf", "grib", "bufr", "hdf5", "dds"],
)
def test_formats_pillow_cannot_decode_here_are_unsupported_naming_what_is_missing(data, missing):
    if missing == "Ghostscript" and EpsImagePlugin.has_ghostscript():
        pytest.skip("Ghostscript is installed here, so EPS files decode")
    rejected = standardize_file(data, Standard(8, 8))
    assert isinstance(rejected, Rejection)
    assert rejected.kind == "unsupported", rejected
    assert missing in rejected.reason


def test_a_file_nothing_identifies_is_not_an_image():
    assert standardize_file(b"GRIB but no edition" + bytes(20), Standard(8, 8)).kind == "not_image"


# --- memory ---------------------------------------------------------------------------------------

PEAK_AFTER_DECODE = """
import resource, sys
from imgpipe.images import Standard, standardize_file
data = sys.stdin.buffer.read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rejected = standardize_file(data, Standard(32, 32))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(rejected.kind, (after - before) // 1024)
"""


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (png_header_only(12_000, 7_000), "too_large"),  # 84 MP, under Pillow's own limit
        (png_header_only(7_000, 7_000), "truncated"),  # 49 MP, in budget but far too short
    ],
)
def test_a_tiny_file_claiming_millions_of_pixels_costs_no_memory(data, kind):
    # In a fresh process: ru_maxrss is a high-water mark that earlier tests would have raised.
    result = subprocess.run(
        [sys.executable, "-c", PEAK_AFTER_DECODE], input=data, capture_output=True, check=True
    )
    got_kind, megabytes = result.stdout.decode().split()
    assert got_kind == kind
    assert int(megabytes) < 20  # Pillow would have allocated some 200-650 MB


def test_a_png_just_big_enough_for_its_pixels_is_not_taken_for_truncated():
    image = Image.new("L", (4000, 3000), 255)  # one colour: deflate at its best
    data = encoded(image, "PNG")
    assert len(data) * 100 < 4000 * 3000
    standardized = standardize_file(data, Standard(8, 8))
    assert not isinstance(standardized, Rejection), standardized


# --- colour profiles ------------------------------------------------------------------------------


def wide_gamut_profile() -> bytes:
    """An ICC v2 RGB profile with Adobe RGB (1998) primaries and gamma 2.2, built by hand."""

    def s15(value: float) -> bytes:
        return struct.pack(">i", round(value * 65536))

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ " + bytes(4) + s15(x) + s15(y) + s15(z)

    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, 563) + bytes(2)  # 563/256 = 2.2
    text = b"desc" + bytes(4) + struct.pack(">I", 5) + b"wide\0" + bytes(12) + bytes(67)
    tags = [
        (b"desc", text),
        (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", xyz(0.6097, 0.3111, 0.0195)),
        (b"gXYZ", xyz(0.2053, 0.6257, 0.0609)),
        (b"bXYZ", xyz(0.1492, 0.0756, 0.7446)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, body = struct.pack(">I", len(tags)), b""
    for signature, data in tags:
        data += bytes(-len(data) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = (
        struct.pack(">I4sI", size, b"none", 0x02100000)
        + b"mntrRGB XYZ "
        + bytes(12)
        + b"acsp"
        + bytes(24)
        + struct.pack(">I", 0)
        + s15(0.9642)
        + s15(1.0)
        + s15(0.8249)
        + bytes(48)
    )
    assert len(header) == 128
    return header + table + body


def in_srgb(image: Image.Image, icc: bytes) -> Image.Image:
    """What ``image`` stored with profile ``icc`` looks like in sRGB, by littlecms directly."""
    source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    return ImageCms.profileToProfile(
        image, source, ImageCms.createProfile("sRGB"), outputMode="RGB"
    )


def png_chunks(data: bytes) -> set[bytes]:
    kinds, at = set(), 8
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at : at + 8])
        kinds.add(kind)
        at += 12 + length
    return kinds


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_an_embedded_profile_is_applied_to_srgb(fmt):
    image = Image.fromarray(np.random.default_rng(3).integers(0, 256, (12, 10, 3), np.uint8))
    icc = wide_gamut_profile()
    data = encoded(image, fmt, icc_profile=icc, quality=95)
    stored = Image.open(io.BytesIO(data)).convert("RGB")
    standardized, source = standardize_file(data, Standard(10, 12, color="rgb"))
    expected = np.asarray(in_srgb(stored, icc))
    assert source.icc == "converted"
    assert np.array_equal(np.asarray(standardized), expected)
    assert np.abs(expected.astype(int) - np.asarray(stored)).mean() > 3  # a real change
    assert "icc_profile" not in standardized.info
    assert png_chunks(encode_png(standardized)) == {b"IHDR", b"IDAT", b"IEND"}


def test_an_unusable_profile_leaves_the_stored_pixels():
    image = Image.new("RGB", (6, 6), (10, 200, 30))
    standardized, source = standardize_file(
        encoded(image, "PNG", icc_profile=b"not a profile"), Standard(6, 6, color="rgb")
    )
    assert source.icc == "ignored"
    assert np.array_equal(np.asarray(standardized), np.asarray(image))


def test_encode_png_writes_pixels_only_whatever_the_image_carries():
    image = Image.new("RGB", (5, 5), (1, 2, 3))
    image.info.update(
        icc_profile=wide_gamut_profile(), exif=b"Exif\0\0II*\0", comment="hi", dpi=(300, 300)
    )
    assert png_chunks(encode_png(image)) == {b"IHDR", b"IDAT", b"IEND"}
    plain = Image.new("RGB", (5, 5), (1, 2, 3))
    assert encode_png(image) == encode_png(plain)


def test_stored_pngs_hold_the_exact_pixels_in_any_reader():
    from imgpipe.images import STORED, encode_png, stored_png

    rng = np.random.default_rng(3)
    # One deflate block, several (over 64 KB of rows), and a single pixel.
    for shape, mode in (((16, 16), "L"), ((200, 150, 3), "RGB"), ((1, 1, 3), "RGB")):
        pixels = rng.integers(0, 256, shape, dtype=np.uint8)
        image = Image.fromarray(pixels, mode)
        data = encode_png(image, STORED)
        assert data == stored_png(image)
        Image.open(io.BytesIO(data)).verify()  # every chunk's CRC and the zlib stream
        back = Image.open(io.BytesIO(data))
        assert back.mode == mode and np.array_equal(np.asarray(back), pixels)
    # Other modes, and other levels, go through Pillow's encoder.
    assert Image.open(io.BytesIO(encode_png(Image.new("RGBA", (4, 4)), STORED))).mode == "RGBA"

import io
import json
from dataclasses import replace

import numpy as np
import pytest
from PIL import BmpImagePlugin, Image

from imgpipe.errors import ParamsError, StageError
from imgpipe.images import Standard, decode_png_array, standardize_bytes
from imgpipe.params import PrepareParams, parse_params
from imgpipe.shards import read_images, read_manifest
from stages import prepare
from tests.conftest import class_image, layout_of, tree_bytes
from tests.imgpipe.test_images import in_srgb, png_chunks, png_header_only, wide_gamut_profile
from tests.imgpipe.test_parallel import CRASH_MARK, HANG_MARK, fork_only, misbehaving


def _run(raw_dir, tmp_path, **overrides):
    params = PrepareParams(**{"size": (16, 16), "workers": 1, **overrides})
    layout = layout_of(tmp_path, raw=raw_dir, prepared=tmp_path / "prepared")
    summary = prepare.run(params, layout)
    return summary, json.loads(layout.prepare_report.read_text())


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_images_are_standardized_into_shards_with_a_manifest(raw_dir, tmp_path):
    summary, report = _run(raw_dir, tmp_path, color="rgb", shard_size=25)
    manifest = read_manifest(tmp_path / "prepared")
    assert len(manifest) == 60 == summary["images"]["kept"]
    assert sorted(manifest["shard"].unique()) == [
        "shard-00000.tar",
        "shard-00001.tar",
        "shard-00002.tar",
    ]
    assert report["counts_after"] == {"circle": 20, "square": 20, "triangle": 20}
    for _, data in read_images(tmp_path / "prepared", manifest.head(5)):
        assert decode_png_array(data).shape == (16, 16, 3)
    info = json.loads((tmp_path / "prepared" / "info.json").read_text())
    assert info["classes"] == ["circle", "square", "triangle"]
    assert info["standard"]["channels"] == 3
    assert info["standard"]["fit"] == "stretch"


def test_grayscale_gives_one_channel(raw_dir, tmp_path):
    _run(raw_dir, tmp_path, color="grayscale")
    manifest = read_manifest(tmp_path / "prepared")
    _, data = next(read_images(tmp_path / "prepared", manifest.head(1)))
    assert decode_png_array(data).shape == (16, 16, 1)


def test_every_bad_input_is_listed_with_its_path_kind_and_reason(raw_dir, tmp_path):
    circle = raw_dir / "images" / "circle"
    photo = _encoded(Image.effect_noise((64, 64), 50).convert("RGB"), "JPEG")
    noisy_png = bytearray(_encoded(Image.effect_noise((64, 64), 50), "PNG"))
    noisy_png[len(noisy_png) // 2] ^= 0xFF
    bad = {
        "empty.jpg": b"",
        "notes.txt": b"not an image",
        "ds_store_copy": b"\x00\x00\x00\x01Bud1" + bytes(512),
        "truncated.jpg": photo[: len(photo) // 2],
        "corrupt.png": bytes(noisy_png),
        "bomb.png": png_header_only(20_000, 20_000),
        "tiny.png": _encoded(Image.new("RGB", (30, 2)), "PNG"),
    }
    for name, data in bad.items():
        (circle / name).write_bytes(data)
    _, report = _run(raw_dir, tmp_path, min_side=4)
    rejected = {item["path"]: item for item in report["rejected"]}
    assert set(rejected) == {f"images/circle/{name}" for name in bad}
    kinds = {path.rsplit("/", 1)[1]: item["kind"] for path, item in rejected.items()}
    assert kinds == {
        "empty.jpg": "empty",
        "notes.txt": "not_image",
        "ds_store_copy": "not_image",
        "truncated.jpg": "truncated",
        "corrupt.png": "corrupt",
        "bomb.png": "too_large",
        "tiny.png": "too_small",
    }
    assert all(item["reason"] and item["label"] == "circle" for item in rejected.values())
    assert report["rejected_by_kind"]["not_image"] == 2
    assert report["skipped_by_download"] == []
    assert report["counts_before"] == {"circle": 27, "square": 20, "triangle": 20}
    assert report["counts_after"] == {"circle": 20, "square": 20, "triangle": 20}


def test_a_decoder_failing_unexpectedly_rejects_only_its_file(raw_dir, tmp_path, monkeypatch):
    (raw_dir / "images" / "circle" / "plugin-bug.bmp").write_bytes(
        _encoded(Image.new("RGB", (20, 20)), "BMP")
    )

    def broken_load(self):
        raise RuntimeError("plugin bug")

    monkeypatch.setattr(BmpImagePlugin.BmpImageFile, "load", broken_load)
    _, report = _run(raw_dir, tmp_path)
    assert [(r["path"], r["kind"], r["reason"]) for r in report["rejected"]] == [
        ("images/circle/plugin-bug.bmp", "corrupt", "cannot decode: RuntimeError: plugin bug")
    ]
    assert report["counts_after"] == {"circle": 20, "square": 20, "triangle": 20}


def test_awkward_but_valid_inputs_are_kept_and_noted(raw_dir, tmp_path):
    square = raw_dir / "images" / "square"
    png = _encoded(class_image(1, 90), "PNG")
    webp = _encoded(class_image(1, 91), "WEBP", lossless=True)
    frames = [Image.new("RGB", (24, 24), c) for c in ((250, 0, 0), (0, 250, 0))]
    odd_names = {
        "png really.jpg": png,
        "webp [copy] (2).jpg": webp,
        "ünïcode 猫, comma.gif": _encoded(
            frames[0], "GIF", save_all=True, append_images=frames[1:]
        ),
        "cmyk.jpg": _encoded(Image.new("CMYK", (24, 24), (0, 255, 255, 0)), "JPEG"),
        "alpha.png": _encoded(Image.new("RGBA", (24, 24), (0, 0, 0, 0)), "PNG"),
        "grey16.png": _encoded(Image.fromarray(np.full((24, 24), 40000, np.uint16)), "PNG"),
    }
    for name, data in odd_names.items():
        (square / name).write_bytes(data)
    _, report = _run(raw_dir, tmp_path, color="rgb", background=(0, 0, 255))
    assert report["rejected"] == []
    assert report["counts_after"]["square"] == 26
    assert report["format_not_extension"] == [
        {"path": "images/square/png really.jpg", "format": "PNG"},
        {"path": "images/square/webp [copy] (2).jpg", "format": "WEBP"},
    ]
    assert report["animated"] == [{"path": "images/square/ünïcode 猫, comma.gif", "frames": 2}]
    assert report["converted"]["cmyk_converted"] == 1
    assert report["converted"]["alpha_composited"] == 1
    assert report["converted"]["sixteen_bit_scaled"] == 1
    manifest = read_manifest(tmp_path / "prepared").set_index("origin")
    assert "images/square/ünïcode 猫, comma.gif" in manifest.index
    rows = manifest.loc[["images/square/alpha.png", "images/square/ünïcode 猫, comma.gif"]]
    blue, red = (decode_png_array(data) for _, data in read_images(tmp_path / "prepared", rows))
    assert np.all(blue == (0, 0, 255))  # transparency composited on the chosen background
    assert np.abs(red.astype(int) - (250, 0, 0)).max() <= 8  # first frame


def test_class_below_minimum_stops_with_its_name(raw_dir, tmp_path):
    for path in sorted((raw_dir / "images" / "square").iterdir())[3:]:
        path.unlink()
    (raw_dir / "images" / "square" / "broken.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(StageError, match=r"'square' has 3.*prepare.min_per_class"):
        _run(raw_dir, tmp_path, min_per_class=5)
    assert not (tmp_path / "prepared").exists()
    report = json.loads((tmp_path / "reports" / "prepare.json").read_text())
    assert [item["path"] for item in report["rejected"]] == ["images/square/broken.png"]


def test_exact_duplicates_share_a_group_and_conflicts_are_reported(raw_dir, tmp_path):
    images = raw_dir / "images"
    original = images / "circle" / "img-001.png"
    (images / "circle" / "copy.png").write_bytes(original.read_bytes())
    # Same pixels, another format: still the same image after standardizing.
    Image.open(original).save(images / "circle" / "copy as bmp.bmp")
    (images / "square" / "stolen.png").write_bytes((images / "circle" / "img-002.png").read_bytes())
    _, report = _run(raw_dir, tmp_path)
    manifest = read_manifest(tmp_path / "prepared").set_index("origin")
    group = manifest.loc["images/circle/img-001.png", "group"]
    assert manifest.loc["images/circle/copy.png", "group"] == group
    assert manifest.loc["images/circle/copy as bmp.bmp", "group"] == group
    assert manifest["group"].nunique() == len(manifest) - 3
    assert report["duplicates"]["groups_with_copies"] == 2
    assert report["duplicates"]["images_in_those_groups"] == 5
    stolen_group = manifest.loc["images/square/stolen.png", "group"]
    assert report["label_conflicts"] == [
        {
            "group": stolen_group,
            "labels": ["circle", "square"],
            "paths": ["images/circle/img-002.png", "images/square/stolen.png"],
        }
    ]


def test_fit_fill_and_luma_reach_the_shards(raw_dir, tmp_path):
    wide = Image.new("RGB", (40, 20), (0, 255, 0))
    wide.save(raw_dir / "images" / "circle" / "wide.png")
    _run(raw_dir, tmp_path, fit="pad", fill="#ff0000", luma="bt709", color="grayscale")
    manifest = read_manifest(tmp_path / "prepared").set_index("origin")
    _, data = next(read_images(tmp_path / "prepared", manifest.loc[["images/circle/wide.png"]]))
    pixels = decode_png_array(data)[..., 0]
    assert pixels[0, 0] == round(0.2125 * 255)  # the red bars, grey by BT.709
    assert pixels[8, 8] == round(0.7154 * 255)


def test_output_bytes_do_not_depend_on_worker_count(raw_dir, tmp_path):
    (raw_dir / "images" / "circle" / "empty.png").write_bytes(b"")
    one, two = tmp_path / "one", tmp_path / "two"
    _run(raw_dir, one, workers=1)
    _run(raw_dir, two, workers=2)
    assert tree_bytes(one / "prepared") == tree_bytes(two / "prepared")
    assert tree_bytes(one / "reports") == tree_bytes(two / "reports")


def test_preview_grid_shows_each_class(raw_dir, tmp_path):
    _run(raw_dir, tmp_path, color="rgb")
    preview = Image.open(tmp_path / "reports" / "prepare" / "preview.png")
    assert preview.format == "PNG"
    assert preview.height >= 3 * 64 and preview.width >= 8 * 64
    # Each class's row holds its own images: the bright stripe moves from row to row.
    assert np.asarray(preview.convert("L")).std() > 20


def test_prepare_params_are_validated_with_the_key_named():
    params = parse_params({"prepare": {"fill": "white", "luma": [0.3, 0.6, 0.1], "fit": "crop"}})
    assert params.prepare.fill == (255, 255, 255)
    for bad, key in [
        ({"fit": "zoom"}, "prepare.fit"),
        ({"fill": "nocolour"}, "prepare.fill"),
        ({"luma": [1, 1, 1]}, "prepare.luma"),
        ({"min_side": 0}, "prepare.min_side"),
    ]:
        with pytest.raises(ParamsError, match=key):
            parse_params({"prepare": bad})


def test_an_original_standardized_again_gives_exactly_the_stored_pixels(raw_dir, tmp_path):
    """What predict relies on, for a JPEG large enough that the reduced decode is used."""
    photo = Image.fromarray(np.random.default_rng(3).integers(0, 255, (200, 300, 3), np.uint8))
    original = raw_dir / "images" / "circle" / "photo.jpg"
    photo.resize((600, 400)).save(original, quality=90)
    _, report = _run(raw_dir, tmp_path, color="rgb", luma="bt709")
    assert report["converted"]["jpeg_dct_scaled"] == 1
    info = json.loads((tmp_path / "prepared" / "info.json").read_text())
    standard = Standard.from_dict(info["standard"])
    manifest = read_manifest(tmp_path / "prepared").set_index("origin")
    _, data = next(read_images(tmp_path / "prepared", manifest.loc[["images/circle/photo.jpg"]]))
    again, source = standardize_bytes(original.read_bytes(), standard)
    assert source.draft_scale > 1
    assert np.array_equal(np.asarray(again), decode_png_array(data))


def test_files_download_set_aside_are_in_the_report_too(raw_dir, tmp_path):
    source = json.loads((raw_dir / "source.json").read_text())
    skipped = [{"path": "circle/.DS_Store", "reason": "hidden or operating-system file"}]
    (raw_dir / "source.json").write_text(json.dumps({**source, "skipped": skipped}))
    _, report = _run(raw_dir, tmp_path)
    assert report["skipped_by_download"] == skipped


def test_a_source_with_its_own_split_marks_it_in_the_manifest(raw_dir, tmp_path, monkeypatch):
    items, classes = prepare.list_items(raw_dir)
    marked = [
        replace(item, split="test" if i % 3 == 0 else "train") for i, item in enumerate(items)
    ]
    monkeypatch.setattr(prepare, "list_items", lambda _: (marked, classes))
    _run(raw_dir, tmp_path)
    manifest = read_manifest(tmp_path / "prepared").set_index("origin")
    for item in marked:
        assert manifest.loc[item.origin, "source_split"] == item.split


@fork_only
def test_files_that_kill_or_hang_their_decoder_are_rejected_and_the_rest_kept(
    raw_dir, tmp_path, monkeypatch
):
    circle = raw_dir / "images" / "circle"
    (circle / "segfault.png").write_bytes(b"\x89PNG" + CRASH_MARK)
    (circle / "loops.png").write_bytes(b"\x89PNG" + HANG_MARK)
    monkeypatch.setattr(prepare, "standardize_file", misbehaving(prepare.standardize_file))
    one, two = tmp_path / "one", tmp_path / "two"
    _, report = _run(raw_dir, one, workers=1, timeout=1)
    _run(raw_dir, two, workers=2, timeout=1)
    rejected = {r["path"]: (r["kind"], r["reason"]) for r in report["rejected"]}
    assert rejected == {
        "images/circle/segfault.png": (
            "crashed",
            "the decoding process was killed by SIGKILL (the out-of-memory killer, or a kill); "
            "a decoder crash or running out of memory on this file",
        ),
        "images/circle/loops.png": (
            "timeout",
            "decoding took longer than the limit of 1 s; "
            "raise prepare.timeout if the file is sound but slow",
        ),
    }
    assert report["counts_after"] == {"circle": 20, "square": 20, "triangle": 20}
    assert tree_bytes(one / "prepared") == tree_bytes(two / "prepared")
    assert tree_bytes(one / "reports") == tree_bytes(two / "reports")


def test_an_icc_profile_is_applied_and_not_stored(raw_dir, tmp_path):
    image = Image.fromarray(np.random.default_rng(5).integers(0, 256, (16, 16, 3), np.uint8))
    icc = wide_gamut_profile()
    (raw_dir / "images" / "square" / "wide.png").write_bytes(
        _encoded(image, "PNG", icc_profile=icc)
    )
    _, report = _run(raw_dir, tmp_path, color="rgb")
    assert report["converted"]["icc_converted"] == 1
    manifest = read_manifest(tmp_path / "prepared")
    stored = dict(read_images(tmp_path / "prepared", manifest))
    wide = manifest.loc[manifest["origin"] == "images/square/wide.png", "id"].item()
    assert np.array_equal(decode_png_array(stored[wide])[..., :3], np.asarray(in_srgb(image, icc)))
    assert all(png_chunks(data) <= {b"IHDR", b"IDAT", b"IEND"} for data in stored.values())


def test_quality_flags_are_reported_pictured_and_excluded_when_asked(raw_dir, tmp_path):
    Image.new("RGB", (80, 20), (0, 0, 0)).save(raw_dir / "images" / "circle" / "black.png")
    summary, report = _run(raw_dir, tmp_path, color="rgb")
    flagged = report["quality"]["flags"]
    black = "images/circle/black.png"
    for name in ("too_dark", "low_information", "extreme_aspect"):
        assert flagged[name]["count"] >= 1
        assert black in [f["path"] for f in flagged[name]["files"]]
    # Every image here lacks colour but the stripes: a grey dataset flags no grey image.
    assert summary["images"]["kept"] == 61
    gallery = tmp_path / "reports" / "prepare" / "quality"
    assert sorted(p.name for p in gallery.iterdir()) == sorted(
        f"{name}.png" for name in report["quality"]["flags"]
    )
    quality = PrepareParams().quality.model_copy(update={"exclude": ["extreme_aspect"]})
    summary, report = _run(raw_dir, tmp_path, color="rgb", quality=quality)
    assert summary["images"]["kept"] == 60
    rejected = [r for r in report["rejected"] if r["path"] == black]
    assert rejected[0]["kind"] == "quality_extreme_aspect"
    assert "extreme_aspect" in rejected[0]["reason"]


def _cache_counts(caplog) -> tuple[int, int]:
    """(reused, standardized) from the last run's cache log line."""
    line = [r.getMessage() for r in caplog.records if "image(s) reused" in r.getMessage()][-1]
    reused, made = (int(part.split()[0]) for part in line.split(": ", 1)[1].split(", "))
    caplog.clear()
    return reused, made


def test_a_rerun_reuses_the_cache_and_gives_the_bytes_of_a_clean_run(raw_dir, tmp_path, caplog):
    caplog.set_level("INFO", logger="imgpipe.prepare")
    cache = {"dir": str(tmp_path / "cache"), "max_mb": 100}
    _run(raw_dir, tmp_path / "first", cache=cache, workers=2)
    assert _cache_counts(caplog) == (0, 60)
    # Two files added, one changed in place, one renamed (same bytes: still reused).
    class_image(0, 100).save(raw_dir / "images" / "circle" / "new.png")
    class_image(1, 101).save(raw_dir / "images" / "square" / "new.png")
    class_image(2, 102).save(raw_dir / "images" / "triangle" / "img-000.png")
    squares = sorted((raw_dir / "images" / "square").iterdir())
    squares[1].rename(squares[1].with_name("renamed.png"))
    _run(raw_dir, tmp_path / "again", cache=cache)
    assert _cache_counts(caplog) == (59, 3)  # the renamed file is rehashed, then found
    _run(raw_dir, tmp_path / "clean")
    for part in ("prepared", "reports"):
        assert tree_bytes(tmp_path / "again" / part) == tree_bytes(tmp_path / "clean" / part)

    # Damaged packs (a flipped byte in every entry's region) are detected and made again.
    for pack in (tmp_path / "cache").rglob("*.pack"):
        data = bytearray(pack.read_bytes())
        data[::500] = bytes(b ^ 0xFF for b in data[::500])
        pack.write_bytes(bytes(data))
    _run(raw_dir, tmp_path / "damaged", cache=cache, workers=2)
    reused, made = _cache_counts(caplog)
    assert made > 0 and reused + made == 62
    for part in ("prepared", "reports"):
        assert tree_bytes(tmp_path / "damaged" / part) == tree_bytes(tmp_path / "clean" / part)

"""predict: the pixels it feeds the model, unreadable files, output formats, batching."""

from __future__ import annotations

import io
import json
import os
import shutil

import numpy as np
import pytest
from PIL import BmpImagePlugin, Image

from imgpipe import predict
from imgpipe.errors import StageError
from imgpipe.images import Standard, decode_png_array
from imgpipe.params import PrepareParams
from imgpipe.shards import read_images, read_manifest
from imgpipe.trained import load_trained
from stages import prepare
from tests.conftest import layout_of, write_class_folders
from tests.imgpipe.test_parallel import CRASH_MARK, HANG_MARK, fork_only, misbehaving
from tests.tiny_model import CLASSES


@pytest.fixture
def trained(trained_project):
    """The session's shared model; read-only, so tests copy what they change."""
    return trained_project


@pytest.fixture
def mixed_folder(trained, tmp_path):
    """Three good originals plus files that cannot be images, in one folder."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("circle", "square", "triangle"):
        shutil.copy(trained.raw / "images" / name / "img-003.png", folder / f"{name} [3].png")
    good = (folder / "circle [3].png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("not a picture")
    (folder / "readme.txt").write_text("not an image, whatever its name")
    return folder


def _stored_pixels(prepared_dir):
    """Pixels of every prepared image by origin, as training decodes them from the shards."""
    manifest = read_manifest(prepared_dir)
    origin = dict(zip(manifest["id"], manifest["origin"], strict=True))
    return {origin[i]: decode_png_array(data) for i, data in read_images(prepared_dir, manifest)}


@pytest.mark.parametrize(
    "params",
    [
        PrepareParams(size=(16, 16), color="rgb", workers=1),
        PrepareParams(size=(20, 12), color="grayscale", resample="bicubic", workers=1),
        PrepareParams(size=(24, 24), color="rgb", resample="nearest", workers=1),
    ],
    ids=["rgb-shrink", "grey-reshape", "rgb-same-size"],
)
def test_input_tensor_of_an_original_equals_the_prepared_pixels(tmp_path, params):
    raw = write_class_folders(tmp_path / "raw", ["a", "b"], per_class=4, size=(24, 24))
    prepared = tmp_path / "prepared"
    prepare.run(params, layout_of(tmp_path, raw=raw, prepared=prepared))
    info = json.loads((prepared / "info.json").read_text())
    standard = Standard.from_dict(info["standard"])
    stored = _stored_pixels(prepared)
    assert len(stored) == 8
    for origin, pixels in stored.items():
        tensor, reason = predict.load_file((str(raw / origin), standard))
        assert reason is None
        assert tensor.dtype == np.uint8 and tensor.shape == pixels.shape
        assert np.array_equal(tensor, pixels), origin


def test_predict_gives_the_model_exactly_what_training_saw(trained):
    model = load_trained(trained.model)
    stored = _stored_pixels(trained.prepared)
    origins = sorted(stored)[::7]
    report = predict.run([str(trained.raw / o) for o in origins], trained.model, 3, 4, 1)
    expected = model.probabilities(np.stack([stored[o] for o in origins]))
    assert [p["path"] for p in report.predictions] == [str(trained.raw / o) for o in origins]
    for prediction, row in zip(report.predictions, expected, strict=True):
        got = {c["label"]: c["probability"] for c in prediction["top_k"]}
        assert got == {name: round(float(p), 6) for name, p in zip(CLASSES, row, strict=True)}
    # the stripes are learnable: the originals are recognised
    labels = [o.split("/")[1] for o in origins]
    assert [p["top_k"][0]["label"] for p in report.predictions] == labels


def test_unreadable_files_are_reported_and_the_rest_predicted(trained, mixed_folder):
    report = predict.run([str(mixed_folder)], trained.model, 2, 256, 1)
    predicted = {p["path"].rsplit("/", 1)[1]: p["top_k"][0]["label"] for p in report.predictions}
    assert predicted == {"circle [3].png": "circle", "square [3].png": "square",
                         "triangle [3].png": "triangle"}  # fmt: skip
    reasons = {e["path"].rsplit("/", 1)[1]: e["reason"] for e in report.errors}
    # readme.txt is decoded like any file of a folder: by content, never skipped by its name.
    assert set(reasons) == {"truncated.png", "empty.jpg", "notes.jpg", "readme.txt"}
    assert reasons["readme.txt"] == "not an image Pillow can read"
    assert reasons["empty.jpg"] == "empty file"
    assert reasons["truncated.png"].startswith("truncated file: the data ends before the image")
    assert reasons["notes.jpg"] == "not an image Pillow can read"


def test_a_decoder_failing_unexpectedly_costs_only_its_file(trained, tmp_path, monkeypatch):
    folder = tmp_path / "odd"
    folder.mkdir()
    for name in ("circle", "square"):
        shutil.copy(trained.raw / "images" / name / "img-004.png", folder / f"{name}.png")
    buffer = io.BytesIO()
    Image.new("RGB", (24, 24)).save(buffer, format="BMP")
    (folder / "b-plugin-bug.bmp").write_bytes(buffer.getvalue())

    def broken_load(self):
        raise RuntimeError("plugin bug")

    # Some Pillow plugins fail on malformed files with exception types nobody lists.
    monkeypatch.setattr(BmpImagePlugin.BmpImageFile, "load", broken_load)
    report = predict.run([str(folder)], trained.model, 1, 256, 1)
    assert [p["path"] for p in report.predictions] == [
        str(folder / "circle.png"),
        str(folder / "square.png"),
    ]
    assert [p["top_k"][0]["label"] for p in report.predictions] == ["circle", "square"]
    assert report.errors == [
        {
            "path": str(folder / "b-plugin-bug.bmp"),
            "reason": "cannot decode: RuntimeError: plugin bug",
        }
    ]


def test_json_output_is_valid_and_complete(trained, mixed_folder, tmp_path):
    out = tmp_path / "out.json"
    missing = str(tmp_path / "nowhere.png")
    inputs = [str(mixed_folder / "*.png"), str(mixed_folder / "empty.jpg"), missing]
    with pytest.raises(SystemExit) as status:
        predict.main([*inputs, "--model-dir", str(trained.model), "--format", "json",
                      "--top-k", "2", "--output", str(out)])  # fmt: skip
    assert status.value.code == predict.EXIT_SOME_UNREADABLE
    report = json.loads(out.read_text())
    assert report["classes"] == CLASSES and report["top_k"] == 2
    assert report["count"] == {"predicted": 3, "unreadable": 3}
    named = [p["path"] for p in report["predictions"]] + [e["path"] for e in report["errors"]]
    expected = [str(p) for p in sorted(mixed_folder.glob("*.png"))]
    assert sorted(named) == sorted([*expected, str(mixed_folder / "empty.jpg"), missing])
    for prediction in report["predictions"]:
        ranked = prediction["top_k"]
        assert len(ranked) == 2
        assert {c["label"] for c in ranked} <= set(CLASSES)
        assert ranked[0]["probability"] >= ranked[1]["probability"]
        assert 0 <= sum(c["probability"] for c in ranked) <= 1 + 1e-5
    assert {e["path"]: e["reason"] for e in report["errors"]}[missing] == "no such file or folder"


def test_table_output_has_a_line_per_image_and_exit_status_zero(trained, capsys):
    folder = trained.raw / "images" / "square"
    predict.main([str(folder / "img-00[0-4].png"), "--model-dir", str(trained.model)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["path", "top1", "top2", "top3"]
    assert len(lines) == 6
    for index, line in enumerate(lines[1:]):
        assert line.startswith(str(folder / f"img-00{index}.png"))
        assert line.split()[1] == "square"


def test_batches_and_workers_do_not_change_the_answers(trained):
    inputs = [str(trained.raw / "images")]
    one_by_one = predict.run(inputs, trained.model, 3, 1, 1)
    batched = predict.run(inputs, trained.model, 3, 7, 2)
    assert len(one_by_one.predictions) == 60
    assert batched.predictions == one_by_one.predictions


def test_inputs_expand_folders_globs_and_keep_order_without_repeats(tmp_path):
    clutter = ("a/.hidden.png", "a/Thumbs.db", "a/__MACOSX/x.png", "a/.cache/y.png")
    for name in ("b/2.jpg", "b/1.PNG", "a/x.png", "a/n.txt", *clutter):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    odd = tmp_path / "odd [1].png"
    odd.write_bytes(b"x")
    files, problems = predict.expand_inputs(
        [str(tmp_path / "b"), str(tmp_path / "a"), str(tmp_path / "*" / "*.png"), str(odd),
         str(tmp_path / "a/n.txt"), str(tmp_path / "*.gif"), str(tmp_path / "empty")]
    )  # fmt: skip
    names = [p.relative_to(tmp_path).as_posix() for p in files]
    # A folder gives every file but clutter, whatever its name ends with.
    assert names == ["b/1.PNG", "b/2.jpg", "a/n.txt", "a/x.png", "odd [1].png"]
    assert problems == [
        {"path": str(tmp_path / "*.gif"), "reason": "pattern matches no files"},
        {"path": str(tmp_path / "empty"), "reason": "no such file or folder"},
    ]


def test_nothing_to_predict_or_no_model_exits_with_status_two(trained, tmp_path, caplog):
    with pytest.raises(SystemExit) as status:
        predict.main([str(tmp_path / "none.png"), "--model-dir", str(trained.model)])
    assert status.value.code == 2
    assert "nothing to predict" in caplog.text
    image = trained.raw / "images" / "circle" / "img-000.png"
    with pytest.raises(SystemExit) as status:
        predict.main([str(image), "--model-dir", str(tmp_path)])
    assert status.value.code == 2
    assert "model.keras is missing" in caplog.text


def test_the_model_is_found_from_any_folder_of_the_project(trained, tmp_path, monkeypatch, capsys):
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "dvc.yaml").write_text("stages: {}\n")
    (project / "data" / "model").symlink_to(trained.model, target_is_directory=True)
    inside = project / "photos" / "holiday"
    inside.mkdir(parents=True)
    image = trained.raw / "images" / "square" / "img-000.png"
    monkeypatch.chdir(inside)
    predict.main([str(image)])
    assert capsys.readouterr().out.splitlines()[1].split()[:2] == [str(image), "square"]


def test_outside_a_project_the_message_names_the_folder_searched(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    with pytest.raises(StageError) as stopped:
        predict.project_model_dir(outside)
    message = str(stopped.value)
    assert f"neither {outside.resolve()} nor a folder above it holds dvc.yaml" in message
    assert "--model-dir PROJECT/data/model" in message


def test_a_folder_is_decoded_by_content_not_by_name(trained, tmp_path, caplog):
    folder = tmp_path / "odd names"
    folder.mkdir()
    png = (trained.raw / "images" / "circle" / "img-003.png").read_bytes()
    jpeg = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").save(jpeg, format="JPEG", quality=95)
    (folder / "scan.xyz").write_bytes(png)
    (folder / "camera.mpo").write_bytes(jpeg.getvalue())
    (folder / "web.jfif").write_bytes(jpeg.getvalue())
    (folder / "notes.txt").write_text("shopping list")
    (folder / ".DS_Store").write_bytes(b"clutter")
    with caplog.at_level("INFO", logger="imgpipe.predict"):
        report = predict.run([str(folder)], trained.model, 1, 256, 1)
    assert sorted(p["path"].rsplit("/", 1)[1] for p in report.predictions) == [
        "camera.mpo",
        "scan.xyz",
        "web.jfif",
    ]
    assert report.errors == [
        {"path": str(folder / "notes.txt"), "reason": "not an image Pillow can read"}
    ]
    assert "skipped by reason: 1 not an image Pillow can read" in caplog.text


def test_a_name_that_is_not_utf8_is_predicted_and_written_escaped(trained, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    odd = os.fsdecode(os.fsencode(folder) + b"/caf\xff.png")
    shutil.copy(trained.raw / "images" / "circle" / "img-003.png", odd)
    out = tmp_path / "out.json"
    predict.main([str(folder), "--model-dir", str(trained.model), "--format", "json",
                  "--output", str(out)])  # fmt: skip
    report = json.loads(out.read_bytes().decode("utf-8"))
    assert [p["path"] for p in report["predictions"]] == [f"{folder}/caf%FF.png"]


@fork_only
def test_files_that_kill_or_hang_the_decoder_are_errors_and_the_rest_predicted(
    trained, tmp_path, monkeypatch
):
    folder = tmp_path / "hostile"
    folder.mkdir()
    for name in ("circle", "square"):
        shutil.copy(trained.raw / "images" / name / "img-004.png", folder / f"{name}.png")
    (folder / "b-segfault.png").write_bytes(b"\x89PNG" + CRASH_MARK)
    (folder / "c-loops.png").write_bytes(b"\x89PNG" + HANG_MARK)
    monkeypatch.setattr(predict, "standardize_file", misbehaving(predict.standardize_file))
    for workers in (1, 2):
        report = predict.run([str(folder)], trained.model, 1, 256, workers, timeout=1)
        assert [p["top_k"][0]["label"] for p in report.predictions] == ["circle", "square"]
        reasons = {e["path"].rsplit("/", 1)[1]: e["reason"] for e in report.errors}
        assert reasons["b-segfault.png"].startswith("crashed: the decoding process was killed")
        assert reasons["c-loops.png"] == (
            "timeout: decoding took longer than the limit of 1 s "
            "(raise --timeout if the file is sound but slow)"
        )

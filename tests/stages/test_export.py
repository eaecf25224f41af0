"""export: every format written once from the shared model, checked, and used by predict."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from imgpipe import predict, runtimes
from imgpipe.errors import ParamsError, StageError
from imgpipe.export_check import split_batches, verify
from imgpipe.export_formats import METADATA_FILE, TFLITE_FILES
from imgpipe.images import model_array, standardize_bytes
from imgpipe.params import ExportParams, parse_params
from stages import export
from tests.conftest import class_image, layout_of
from tests.tiny_model import CLASSES

EXPORTS = ["saved_model", "onnx", "tflite_float32", "tflite_float16", "tflite_int8"]


@pytest.fixture(scope="module")
def exported(trained_project, tmp_path_factory):
    """One run of the stage, every format, from the session's model (read-only)."""
    root = tmp_path_factory.mktemp("export")
    layout = layout_of(
        root,
        model=trained_project.model,
        prepared=trained_project.prepared,
        split=trained_project.split,
    )
    summary = export.run(ExportParams(), layout)
    return layout, summary


def _made_in_test(standard, count: int = 4) -> tuple[np.ndarray, list[int]]:
    """Stripe images the model never saw (other noise seeds), standardized as prepare does."""
    import io

    pixels, labels = [], []
    for label in range(len(CLASSES)):
        for sample in range(100, 100 + count):
            buffer = io.BytesIO()
            class_image(label, sample).save(buffer, format="PNG")
            image, _ = standardize_bytes(buffer.getvalue(), standard)
            pixels.append(model_array(image))
            labels.append(label)
    return np.stack(pixels), labels


def test_every_format_is_written_described_reported_and_timed(exported):
    layout, summary = exported
    folder = layout.export
    assert (folder / "saved_model" / "1" / "saved_model.pb").is_file()
    assert (folder / "model.onnx").is_file()
    assert all((folder / name).is_file() for name in TFLITE_FILES.values())
    assert not list(folder.parent.glob(".*.partial"))
    metadata = json.loads((folder / METADATA_FILE).read_text())
    assert metadata["classes"] == CLASSES
    assert metadata["standard"]["width"] == 16 and metadata["input"]["dtype"] == "uint8"
    assert sorted(metadata["exports"]) == sorted(EXPORTS)
    report = json.loads(layout.export_report.read_text())
    assert report == summary["report"] and sorted(report["exports"]) == sorted(EXPORTS)
    for name, figures in report["exports"].items():
        path = folder / figures["file"]
        files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
        assert figures["bytes"] == sum(p.stat().st_size for p in files)
        assert figures["images"] == report["test_images"] > 0
        assert figures["quantized"] == (name in ("tflite_float16", "tflite_int8"))
        assert figures["top1_agreement"] >= 0.99
        if not figures["quantized"]:
            assert figures["max_difference"] <= 1e-4
    # Latencies are kept out of what DVC tracks, beside the Keras model's own.
    timing = json.loads(layout.export_timing.read_text())
    assert set(timing) == {"keras", *EXPORTS}
    assert all(t["single_image_ms"] > 0 and t["batch_ms"] > 0 for t in timing.values())
    assert "ms" not in layout.export_report.read_text()


def test_each_export_agrees_with_the_keras_model_on_new_images(exported, trained_project):
    layout, _ = exported
    keras_model = runtimes.load(trained_project.model)
    assert keras_model.format == "keras"
    pixels, labels = _made_in_test(keras_model.standard)
    expected = keras_model.probabilities(pixels)
    assert list(expected.argmax(axis=1)) == labels  # the stripes were learnt
    formats = {}
    for name, file in json.loads((layout.export / METADATA_FILE).read_text())["exports"].items():
        model = runtimes.load(layout.export / file)
        formats[name] = model.format
        assert model.classes == CLASSES and model.standard == keras_model.standard
        got = model.probabilities(pixels)
        assert list(got.argmax(axis=1)) == labels, name
        if name in ("saved_model", "onnx", "tflite_float32"):
            assert np.abs(got - expected).max() <= 1e-4, name
    assert formats == dict(zip(EXPORTS, ["saved_model", "onnx"] + ["tflite"] * 3, strict=True))
    # TF Serving's base path (the folder of version folders) loads its highest version.
    assert runtimes.describe(layout.export / "saved_model").format == "saved_model"


def test_predict_with_every_format_gives_the_keras_top1(exported, trained_project, tmp_path):
    layout, _ = exported
    folder = tmp_path / "images"
    for index, name in enumerate(CLASSES):
        target = folder / f"{name}.png"
        target.parent.mkdir(exist_ok=True)
        class_image(index, 200).save(target)
    keras_report = predict.run([str(folder)], trained_project.model, 2, 8, 1)
    expected = [p["top_k"][0]["label"] for p in keras_report.predictions]
    assert sorted(expected) == CLASSES
    models = [layout.export / "saved_model", layout.export / "model.onnx"]
    models += [layout.export / name for name in TFLITE_FILES.values()]
    for model in models:
        report = predict.run([str(folder)], model, 2, 8, 1)
        assert [p["top_k"][0]["label"] for p in report.predictions] == expected, model
        assert report.to_dict()["count"] == {"predicted": 3, "unreadable": 0}
        assert report.format in ("saved_model", "onnx", "tflite")


def _reference(trained_project):
    return runtimes.load(trained_project.model)


def _flip_weights(onnx_path) -> None:
    """Flip bytes in the middle of the largest weight tensor, leaving the file readable."""
    import onnx

    largest = max(onnx.load(str(onnx_path)).graph.initializer, key=lambda t: len(t.raw_data))
    data = bytearray(onnx_path.read_bytes())
    start = data.find(largest.raw_data) + len(largest.raw_data) // 2
    data[start : start + 4096] = bytes(b ^ 0x5A for b in data[start : start + 4096])
    onnx_path.write_bytes(bytes(data))


def test_a_damaged_or_swapped_export_fails_the_check_naming_it(exported, trained_project, tmp_path):
    import keras

    from imgpipe.exporters import write_saved_model, write_tflite

    layout, _ = exported
    copy = tmp_path / "export"
    shutil.copytree(layout.export, copy)
    _flip_weights(copy / "model.onnx")
    # Another model of the same shape and classes, converted and put in model.tflite's place.
    inputs = keras.Input((16, 16, 3), dtype="uint8")
    outputs = keras.layers.Dense(3, activation="softmax")(
        keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    )
    write_saved_model(keras.Model(inputs, outputs), tmp_path / "other")
    write_tflite(tmp_path / "other", copy / "model.tflite", "float32")
    batches = split_batches(trained_project.prepared, trained_project.split, 64)
    with pytest.raises(StageError) as stopped:
        verify(copy, _reference(trained_project), batches, ExportParams())
    message = str(stopped.value)
    assert "2 export(s)" in message
    assert "onnx: max probability difference" in message
    assert "tflite_float32: max probability difference" in message
    assert "over export.max_difference 0.0001" in message
    assert "saved_model:" not in message and "tflite_int8:" not in message
    # A file that no longer parses is named too, with what to do.
    (copy / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(StageError, match=r"model\.onnx: cannot load this onnx model"):
        verify(copy, _reference(trained_project), batches, ExportParams())


def test_a_failed_check_leaves_no_export(trained_project, tmp_path, monkeypatch):
    from imgpipe import exporters

    def write_then_damage(model, folder, formats, variants):
        written = exporters.write_exports(model, folder, formats, variants)
        _flip_weights(folder / "model.onnx")
        return written

    monkeypatch.setattr(export, "write_exports", write_then_damage)
    layout = layout_of(
        tmp_path,
        model=trained_project.model,
        prepared=trained_project.prepared,
        split=trained_project.split,
    )
    with pytest.raises(StageError, match=r"1 export\(s\) in .*export disagree.*\n  onnx: max"):
        export.run(ExportParams(formats=["onnx"]), layout)
    assert not layout.export.exists() and not layout.export_report.exists()
    assert not list(tmp_path.rglob(".*.partial"))


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"formats": ["onnx", "onnx"]}, "formats lists onnx more than once"),
        ({"formats": ["tflite"], "tflite": []}, "tflite lists no variant"),
        ({"formats": ["keras"]}, "export.formats.0: Input should be 'saved_model', 'onnx' or"),
        ({"max_difference": 0}, "export.max_difference: Input should be greater than 0"),
        ({"formats": []}, "export.formats: List should have at least 1 item"),
    ],
)
def test_export_params_are_checked(section, message):
    with pytest.raises(ParamsError, match=message):
        parse_params({"export": section})


def test_onnx_of_a_model_with_augmentation_and_batch_norm_runs_as_at_inference(tmp_path):
    import keras
    import onnxruntime

    from imgpipe.exporters import write_onnx
    from imgpipe.models import build_model

    keras.utils.set_random_seed(1)
    layers = [{"type": "conv", "filters": 4, "kernel": 3}, {"type": "bn"}, {"type": "relu"}]
    augmentation = [{"type": "flip", "mode": "horizontal"}, {"type": "rotation", "factor": 0.1}]
    model = build_model(layers, (16, 16, 3), 3, augmentation)
    write_onnx(model, tmp_path / "model.onnx")
    # Loadable (no random ops), and batch norm uses its moving statistics, not the batch's.
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"))
    pixels = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    got = session.run(None, {"pixels": pixels})[0]
    assert np.abs(got - model.predict_on_batch(pixels)).max() <= 1e-5
    assert [o.name for o in session.get_outputs()] == ["probabilities"]

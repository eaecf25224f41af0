"""The runtime registry: finding a model's format, describing it without loading a framework,
running it, and saying what is wrong with a path that holds no usable model.

The model here is an ONNX graph built in the test (no TensorFlow): its class is the brighter
half of a 4x4 grey image.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import imgpipe.runtimes
from imgpipe import runtimes
from imgpipe.errors import StageError
from imgpipe.images import Standard
from imgpipe.runtimes.saved_model import model_folder
from tests.conftest import REPO_ROOT

STANDARD = Standard(width=4, height=4, color="grayscale")
CLASSES = ["top", "bottom"]


def halves_onnx(path: Path) -> Path:
    """uint8 [N, 4, 4, 1] -> softmax over (top half brightness, bottom half brightness)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.zeros((16, 2), np.float32)
    weights[:8, 0] = weights[8:, 1] = 0.05
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["pixels"], ["grey"], to=TensorProto.FLOAT),
            helper.make_node("Reshape", ["grey", "shape"], ["flat"]),
            helper.make_node("MatMul", ["flat", "weights"], ["scores"]),
            helper.make_node("Softmax", ["scores"], ["probabilities"], axis=1),
        ],
        "halves",
        [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["batch", 4, 4, 1])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2])],
        [
            numpy_helper.from_array(np.array([-1, 16], np.int64), "shape"),
            numpy_helper.from_array(weights, "weights"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def describe_beside(folder: Path, classes: list[str] = CLASSES) -> None:
    metadata = {"classes": classes, "standard": STANDARD.to_dict(), "exports": {}}
    (folder / "model.json").write_text(json.dumps(metadata))


def half_bright(bottom: bool) -> np.ndarray:
    pixels = np.zeros((4, 4, 1), np.uint8)
    pixels[slice(2, 4) if bottom else slice(0, 2)] = 255
    return pixels


@pytest.fixture
def onnx_model(tmp_path) -> Path:
    path = halves_onnx(tmp_path / "export" / "model.onnx")
    describe_beside(path.parent)
    return path


def test_every_runtime_module_is_registered():
    package = Path(imgpipe.runtimes.__file__).parent
    modules = {m.name for m in pkgutil.iter_modules([str(package)])} - {"common"}
    registered = {r.open.__module__.rsplit(".", 1)[1] for r in runtimes.RUNTIMES}
    assert registered == modules
    assert [r.name for r in runtimes.RUNTIMES] == ["keras", "saved_model", "onnx", "tflite"]


def test_an_onnx_model_is_described_without_loading_and_then_run(onnx_model):
    info = runtimes.describe(onnx_model)
    assert (info.format, info.classes, info.standard) == ("onnx", CLASSES, STANDARD)
    model = info.load()
    probabilities = model.probabilities(np.stack([half_bright(False), half_bright(True)]))
    assert probabilities.dtype == np.float64
    assert list(probabilities.argmax(axis=1)) == [0, 1]
    assert np.allclose(probabilities.sum(axis=1), 1)


def test_predict_on_an_onnx_model_never_imports_tensorflow(onnx_model, tmp_path):
    image = tmp_path / "bottom.png"
    Image.fromarray(half_bright(True)[..., 0]).resize((40, 40)).save(image)
    script = (
        "import sys\n"
        "from imgpipe import predict\n"
        f"predict.main([{str(image)!r}, '--model', {str(onnx_model)!r}, '--format', 'json'])\n"
        "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["format"] == "onnx" and report["model_dir"] == str(onnx_model)
    assert report["predictions"][0]["top_k"][0]["label"] == "bottom"


def test_paths_that_hold_no_usable_model_say_why(onnx_model, tmp_path):
    with pytest.raises(StageError, match=r"missing\.onnx: no such model file or folder"):
        runtimes.describe(tmp_path / "missing.onnx")
    odd = tmp_path / "model.pt"
    odd.write_bytes(b"\0")
    with pytest.raises(StageError, match=r"no model of a known format \(keras: .*onnx: a \.onnx"):
        runtimes.describe(odd)
    lonely = tmp_path / "lonely" / "model.onnx"
    halves_onnx(lonely)
    with pytest.raises(StageError, match=r"no model\.json beside it or above it"):
        runtimes.describe(lonely)
    garbage = onnx_model.parent / "model.tflite"
    garbage.write_bytes(b"TFL3 but not really a model")
    with pytest.raises(StageError, match=r"model\.tflite: cannot load this tflite model"):
        runtimes.load(garbage)
    # A folder train never wrote into names the file it lacks, as before exports existed.
    with pytest.raises(StageError, match=r"model\.keras is missing: train a model first"):
        runtimes.describe(tmp_path)


def test_a_class_list_that_does_not_fit_the_model_is_refused(onnx_model):
    describe_beside(onnx_model.parent, ["a", "b", "c"])
    model = runtimes.load(onnx_model)
    with pytest.raises(StageError, match=r"scores of shape \(1, 2\) for 1 image\(s\) of 3 classes"):
        model.probabilities(half_bright(True)[None])


def test_a_serving_base_path_means_its_highest_version(tmp_path):
    base = tmp_path / "export" / "saved_model"
    for version in ("1", "3", "10", "notes"):
        (base / version).mkdir(parents=True)
        (base / version / "saved_model.pb").write_bytes(b"")
    describe_beside(tmp_path / "export")
    assert model_folder(base) == base / "10"
    assert model_folder(base / "3") == base / "3"
    info = runtimes.describe(base)
    assert info.format == "saved_model" and info.classes == CLASSES

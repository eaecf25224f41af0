"""A Keras model written as a SavedModel, ONNX and TFLite, the same bytes on every run.

Every export takes what the Keras model takes, a batch of uint8 HxWxC pixels named
``pixels`` (the model rescales them itself), and gives float32 class probabilities named
``probabilities``. What made the bytes differ from one run to the next, and what is done:

- Keras' own SavedModel export lists the variables in an order taken from a set of objects
  keyed by memory address, and the SavedModel's fingerprint holds a random uuid. Here the
  SavedModel is saved from a module tracking the model's variables in the model's order, and
  the fingerprint's uuid is derived from its content hashes.
- tf2onnx merges equal constants and sorts nodes through sets of names, whose order follows
  Python's per-process string hashing; the stage runs under a fixed ``PYTHONHASHSEED``
  (``with_fixed_hash_seed``).
- TFLite conversion is deterministic as it is.

Every export runs the model with ``training=False`` (see ``_called_for_inference``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from imgpipe.export_formats import (
    INPUT_NAME,
    OUTPUT_NAME,
    export_file,
    export_name,
)
from imgpipe.quiet_tf import import_tensorflow, native_stderr_muted, verbose

log = logging.getLogger("imgpipe.exporters")

HASH_SEED = "0"
ONNX_OPSET = 17  # fixed, so a newer tf2onnx default does not change the file
FINGERPRINT = "fingerprint.pb"
SIGNATURE = "serving_default"


def with_fixed_hash_seed(module: str) -> None:
    """Run this process again as ``python -m module`` with a fixed PYTHONHASHSEED, unless it is.

    String hashing is seeded once, when the interpreter starts, so the only way to fix it
    for a running stage is to start it again; ``exec`` keeps the process (DVC waits on its
    id), its arguments, standard streams and working folder.
    """
    if os.environ.get("PYTHONHASHSEED") == HASH_SEED:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    environment = {**os.environ, "PYTHONHASHSEED": HASH_SEED}
    os.execve(sys.executable, [sys.executable, "-m", module, *sys.argv[1:]], environment)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Converters print pages of C++ progress lines on stderr; shown only when verbose."""
    if verbose():
        yield
        return
    with native_stderr_muted():
        yield


def _called_for_inference(model: Any) -> Any:
    """A Keras model that calls ``model`` with ``training=False``, whatever its caller passes.

    Keras' ONNX export calls the model without ``training``; random augmentation layers and
    batch normalization then behave as in training: the exported graph held random ops
    onnxruntime cannot load, and normalized by the batch's own statistics.
    """
    import keras
    import numpy as np

    class Inference(keras.Model):
        def __init__(self, inner: Any) -> None:
            super().__init__(name=inner.name)
            self.inner = inner

        def call(self, pixels: Any) -> Any:
            return self.inner(pixels, training=False)

    wrapper = Inference(model)
    wrapper(np.zeros((1, *model.input_shape[1:]), np.uint8))  # built, as export requires
    return wrapper


def _pixels_spec(model: Any):
    tf = import_tensorflow()
    height, width, channels = model.input_shape[1:]
    return tf.TensorSpec((None, height, width, channels), tf.uint8, name=INPUT_NAME)


def _serving_function(model: Any):
    tf = import_tensorflow()

    @tf.function(input_signature=[_pixels_spec(model)])
    def serve(pixels):
        return {OUTPUT_NAME: model(pixels, training=False)}

    return serve


def _stable_fingerprint(folder: Path) -> None:
    """The fingerprint's uuid, random on every save, derived from the hashes beside it."""
    from tensorflow.core.protobuf import fingerprint_pb2

    path = folder / FINGERPRINT
    if not path.is_file():
        return
    fingerprint = fingerprint_pb2.FingerprintDef()
    fingerprint.ParseFromString(path.read_bytes())
    fingerprint.ClearField("uuid")
    digest = hashlib.sha256(fingerprint.SerializeToString(deterministic=True)).digest()
    fingerprint.uuid = str(int.from_bytes(digest[:16], "big"))
    path.write_bytes(fingerprint.SerializeToString(deterministic=True))


def write_saved_model(model: Any, target: Path) -> None:
    """A SavedModel at ``target`` with the ``serving_default`` signature TF Serving calls."""
    tf = import_tensorflow()
    module = tf.Module()
    module.serve = _serving_function(model)
    used = {id(variable) for variable in module.serve.get_concrete_function().variables}
    # What inference reads (not the random layers' seed state, which differs on each load),
    # in the model's own order: this order decides the checkpoint's bytes.
    module.model_variables = [v.value for v in model.variables if id(v.value) in used]
    with _quiet():
        tf.saved_model.save(module, str(target), signatures={SIGNATURE: module.serve})
    _stable_fingerprint(target)


def _canonical_initializers(graph: Any) -> None:
    """Constants named by their first use and merged by content, listed in order of use.

    tf2onnx merges equal constants, but which of their names survives, and the order of the
    initializer list, change from run to run (the model computes the same either way).
    """
    tensors = {tensor.name: tensor for tensor in graph.initializer}
    renamed: dict[str, str] = {}
    by_content: dict[bytes, str] = {}
    ordered = []
    for node in graph.node:
        for position, name in enumerate(node.input):
            if name not in tensors or name in renamed:
                continue
            tensor = tensors[name]
            content = type(tensor)()
            content.CopyFrom(tensor)
            content.ClearField("name")
            key = content.SerializeToString(deterministic=True)
            if key not in by_content:
                by_content[key] = f"{node.name}__input{position}"
                tensor.name = by_content[key]
                ordered.append(tensor)
            renamed[name] = by_content[key]
    for node in graph.node:
        node.input[:] = [renamed.get(name, name) for name in node.input]
    unused = [tensor for name, tensor in tensors.items() if name not in renamed]
    kept = [type(tensor)() for tensor in [*ordered, *unused]]
    for copy, tensor in zip(kept, [*ordered, *unused], strict=True):
        copy.CopyFrom(tensor)
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _tidy_onnx(path: Path) -> None:
    """The output named as in every other format (tf2onnx names it after a TensorFlow op,
    ``Identity:0``), and the constants in a canonical form, so equal models give equal bytes."""
    import onnx

    model = onnx.load(str(path))
    old = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = [OUTPUT_NAME if name == old else name for name in node.output]
        node.input[:] = [OUTPUT_NAME if name == old else name for name in node.input]
    model.graph.output[0].name = OUTPUT_NAME
    _canonical_initializers(model.graph)
    onnx.save(model, str(path))


def write_onnx(model: Any, target: Path) -> None:
    """ONNX through Keras' own export (tf2onnx), input ``pixels``, output ``probabilities``."""
    logging.getLogger("tf2onnx").setLevel(logging.WARNING)
    with _quiet(), warnings.catch_warnings():
        # Keras' numpy-2 patch for tf2onnx probes np.object, which numpy warns about.
        warnings.simplefilter("ignore", FutureWarning)
        _called_for_inference(model).export(
            str(target),
            format="onnx",
            verbose=False,
            input_signature=[_pixels_spec(model)],
            opset_version=ONNX_OPSET,
        )
    _tidy_onnx(target)


def write_tflite(saved_model: Path, target: Path, variant: str) -> None:
    """TFLite from the SavedModel: float32 weights, float16 weights, or int8 dynamic range."""
    tf = import_tensorflow()
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if variant in ("float16", "int8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    with _quiet():
        target.write_bytes(converter.convert())


def write_exports(
    model: Any, folder: Path, formats: list[str], variants: list[str]
) -> dict[str, str]:
    """Every export asked for, below ``folder``: export name -> path relative to ``folder``."""
    written: dict[str, str] = {}
    saved_model = folder / export_file("saved_model")
    if "saved_model" in formats or "tflite" in formats:
        log.info("writing the SavedModel")
        write_saved_model(model, saved_model)
        if "saved_model" in formats:
            written[export_name("saved_model")] = export_file("saved_model")
    if "onnx" in formats:
        log.info("writing ONNX")
        write_onnx(model, folder / export_file("onnx"))
        written[export_name("onnx")] = export_file("onnx")
    if "tflite" in formats:
        for variant in variants:
            log.info("writing TFLite %s", variant)
            write_tflite(saved_model, folder / export_file("tflite", variant), variant)
            written[export_name("tflite", variant)] = export_file("tflite", variant)
    if "saved_model" not in formats and saved_model.exists():
        shutil.rmtree(saved_model.parent)  # made only to convert from
    return written

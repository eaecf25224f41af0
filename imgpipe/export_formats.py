"""The formats ``export`` writes, their file names inside ``data/export/``, and their kinds.

Plain names only, so params can offer the choices and ``predict`` can find a file without
loading any framework. ``export.formats`` picks from ``FORMATS`` and ``export.tflite`` from
``TFLITE_VARIANTS``; every written model is an *export* named ``format`` or
``tflite_<variant>`` in reports and logs.
"""

from __future__ import annotations

FORMATS = ("saved_model", "onnx", "tflite")
# TFLite weights: as trained, stored as float16, or int8 with float activations (dynamic range).
TFLITE_VARIANTS = ("float32", "float16", "int8")
# Exports whose weights are rounded: checked by top-1 agreement, not by the largest difference.
QUANTIZED_VARIANTS = ("float16", "int8")

# Beside the models: the class names, the image standard, and what the input and output are.
METADATA_FILE = "model.json"
# TensorFlow Serving reads <base path>/<version>/saved_model.pb; the version folder is the
# model's number for it, so the export is already laid out as a base path.
SAVED_MODEL_DIR = "saved_model"
SAVED_MODEL_VERSION = "1"
ONNX_FILE = "model.onnx"
TFLITE_FILES = {
    "float32": "model.tflite",
    "float16": "model-float16.tflite",
    "int8": "model-int8.tflite",
}
# The names of the model's input and output in every format that names them.
INPUT_NAME = "pixels"
OUTPUT_NAME = "probabilities"


def export_name(fmt: str, variant: str | None = None) -> str:
    """How reports name one export: ``onnx``, or ``tflite_int8`` for a TFLite variant."""
    return f"{fmt}_{variant}" if variant else fmt


def export_file(fmt: str, variant: str | None = None) -> str:
    """The export's path inside ``data/export/``, as written into ``model.json``."""
    if fmt == "saved_model":
        return f"{SAVED_MODEL_DIR}/{SAVED_MODEL_VERSION}"
    if fmt == "onnx":
        return ONNX_FILE
    if fmt == "tflite" and variant in TFLITE_FILES:
        return TFLITE_FILES[variant]
    raise ValueError(f"no export file for format {fmt!r} variant {variant!r}")


def is_quantized(name: str) -> bool:
    """Whether the export ``name`` (as ``export_name`` gives it) has rounded weights."""
    return name in {export_name("tflite", variant) for variant in QUANTIZED_VARIANTS}

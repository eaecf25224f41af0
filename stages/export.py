"""export: the trained model as a SavedModel, ONNX and TFLite, each checked against Keras.

``data/export/`` holds what ``export.formats`` and ``export.tflite`` ask for:

    saved_model/1/       a TensorFlow SavedModel; its parent is a TF Serving base path
    model.onnx           ONNX, for onnxruntime
    model.tflite         TFLite, float32 weights; model-float16.tflite, model-int8.tflite
    model.json           class names, image standard, input and output, the files above

Every export takes the uint8 pixels ``prepare`` stores and gives class probabilities. Each
is loaded back from its file and run on the whole test split beside the Keras model; one
that disagrees beyond ``export.max_difference`` (float exports) or ``export.min_agreement``
(quantized ones) stops the stage and nothing is written. ``reports/export.json`` gives each
export's size and agreement; latencies, which differ on every run and machine, go to
``logs/export-timing.json``, outside what DVC and git track.
"""

from __future__ import annotations

import logging
from pathlib import Path

from imgpipe import atomic, runtimes
from imgpipe.cli import run_main
from imgpipe.export_check import Agreement, latency, split_batches, verify
from imgpipe.export_formats import INPUT_NAME, METADATA_FILE, OUTPUT_NAME, is_quantized
from imgpipe.exporters import with_fixed_hash_seed, write_exports
from imgpipe.layout import Layout
from imgpipe.params import ExportParams, load_params
from imgpipe.quiet_tf import import_tensorflow
from imgpipe.runtimes import Model
from imgpipe.trained import Trained, load_trained

log = logging.getLogger("imgpipe.export")


def size_of(path: Path) -> int:
    """Bytes of a file, or of every file below a folder."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def metadata(trained: Trained, files: dict[str, str]) -> dict:
    """model.json: what a program needs besides the model file to use it."""
    height, width, channels = trained.model.input_shape[1:]
    return {
        "classes": trained.classes,
        "standard": trained.standard.to_dict(),
        "input": {
            "name": INPUT_NAME,
            "dtype": "uint8",
            "shape": [None, height, width, channels],
            "pixels": "the image standard's pixels, 0-255, as prepare stores them: "
            "imgpipe.images.standardize_bytes; the model rescales them itself",
        },
        "output": {
            "name": OUTPUT_NAME,
            "dtype": "float32",
            "shape": [None, len(trained.classes)],
            "values": "class probabilities, in the order of classes",
        },
        "exports": files,
    }


def _log_table(report: dict, timing: dict) -> None:
    log.info(
        "%-16s %12s %10s %8s %10s %10s",
        "export",
        "bytes",
        "max diff",
        "top-1",
        "1 img ms",
        f"{timing['keras']['batch']} img ms",
    )
    for name in ["keras", *report["exports"]]:
        figures = report["exports"].get(name, {})
        log.info(
            "%-16s %12s %10s %8s %10.3f %10.3f",
            name,
            figures.get("bytes", "-"),
            f"{figures['max_difference']:.3g}" if figures else "-",
            f"{figures['top1_agreement']:.4f}" if figures else "-",
            timing[name]["single_image_ms"],
            timing[name]["batch_ms"],
        )


def _report(files: dict[str, str], folder: Path, agreements: dict[str, Agreement], params) -> dict:
    return {
        "test_images": next(iter(agreements.values())).images if agreements else 0,
        "max_difference_allowed": params.max_difference,
        "min_agreement_required": params.min_agreement,
        "exports": {
            name: {
                "file": path,
                "bytes": size_of(folder / path),
                "quantized": is_quantized(name),
                **agreements[name].figures(),
            }
            for name, path in files.items()
        },
    }


def run(params: ExportParams, layout: Layout) -> dict:
    import_tensorflow()  # first, so that it loads quietly whatever imports it next
    trained = load_trained(layout.model)
    reference = Model(runtimes.describe(layout.model), trained.model.predict_on_batch)
    sample = next(split_batches(layout.prepared, layout.split, params.timing_batch))
    with atomic.atomic_dir(layout.export) as scratch:
        files = write_exports(trained.model, scratch, params.formats, params.tflite)
        atomic.write_json(scratch / METADATA_FILE, metadata(trained, files))
        batches = split_batches(layout.prepared, layout.split, params.batch_size)
        exports, agreements = verify(scratch, reference, batches, params, layout.export)
        report = _report(files, scratch, agreements, params)
        models = {"keras": reference, **exports}
        timing = {
            name: latency(model, sample, params.timing_batch, params.timing_runs)
            for name, model in models.items()
        }
    atomic.write_json(layout.export_report, report)
    atomic.write_json(layout.export_timing, timing)
    _log_table(report, timing)
    log.info(
        "wrote %s to %s, each checked on %d test images; latencies in %s",
        ", ".join(files),
        layout.export,
        report["test_images"],
        layout.export_timing,
    )
    return {"report": report, "timing": timing}


def main() -> None:
    # tf2onnx's output follows Python's string hashing: fixed, so ONNX bytes are the same.
    with_fixed_hash_seed("stages.export")
    run_main("export", lambda: run(load_params().export, Layout()))


if __name__ == "__main__":
    main()

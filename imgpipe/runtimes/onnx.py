"""An ONNX model, run by onnxruntime: TensorFlow is never imported for it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from imgpipe.runtimes.common import Runtime, describe_export

SUFFIX = ".onnx"
QUIET = 3  # onnxruntime's log severity: errors only (it warns about unused initializers)


def recognises(path: Path) -> bool:
    return path.suffix == SUFFIX and path.is_file()


class _Session:
    def __init__(self, path: Path) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = QUIET
        self.session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: pixels})[0]


RUNTIME = Runtime(
    name="onnx",
    holds=f"a {SUFFIX} file",
    recognises=recognises,
    describe=describe_export,
    open=_Session,
)

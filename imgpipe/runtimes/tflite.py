"""A TFLite model, run by LiteRT's interpreter (ai-edge-litert): no TensorFlow import."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from imgpipe.cli import worker_count
from imgpipe.quiet_tf import native_stderr_muted, verbose
from imgpipe.runtimes.common import Runtime, describe_export

SUFFIX = ".tflite"


def recognises(path: Path) -> bool:
    return path.suffix == SUFFIX and path.is_file()


class _Interpreter:
    """One interpreter, resized to each batch size it is given.

    An interpreter holds its tensors between calls, so two threads must not use it at once
    (the server runs requests in threads): calls take turns.
    """

    def __init__(self, path: Path) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=worker_count(0))
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.output = self.interpreter.get_output_details()[0]["index"]
        self.shape: tuple[int, ...] | None = None
        self.lock = threading.Lock()

    def _resize(self, shape: tuple[int, ...]) -> None:
        self.interpreter.resize_tensor_input(self.input, shape)
        first = self.shape is None
        if first and not verbose():
            # Its C++ core announces the CPU delegate on stderr when tensors are first made.
            with native_stderr_muted():
                self.interpreter.allocate_tensors()
        else:
            self.interpreter.allocate_tensors()
        self.shape = shape

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        with self.lock:
            if pixels.shape != self.shape:
                self._resize(pixels.shape)
            self.interpreter.set_tensor(self.input, pixels)
            self.interpreter.invoke()
            return self.interpreter.get_tensor(self.output).copy()


RUNTIME = Runtime(
    name="tflite",
    holds=f"a {SUFFIX} file",
    recognises=recognises,
    describe=describe_export,
    open=_Interpreter,
)

"""Import TensorFlow without the lines its C++ core prints while loading.

TensorFlow writes "All log messages before absl::InitializeLog() ..." and a oneDNN notice
straight to the process's stderr as it loads, before any logging is set up, so neither
``TF_CPP_MIN_LOG_LEVEL`` nor Python's logging can hold them back (measured with TensorFlow
2.21). They tell a user nothing they can act on, so while TensorFlow loads, file descriptor 2
points at /dev/null; a Python error during the import is still raised and shown. With
``IMGPIPE_LOG_LEVEL=DEBUG`` (or a stage's ``--verbose``) everything is shown as before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

LOG_LEVEL_VARIABLE = "IMGPIPE_LOG_LEVEL"


def verbose() -> bool:
    return os.environ.get(LOG_LEVEL_VARIABLE, "INFO").upper() == "DEBUG"


@contextlib.contextmanager
def native_stderr_muted() -> Iterator[None]:
    """Send what C and C++ code write to stderr to /dev/null for the duration."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as sink:
            os.dup2(sink.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def import_tensorflow():
    """``import tensorflow``, quietly unless asked to be verbose; returns the module."""
    if "tensorflow" in sys.modules or verbose():
        import tensorflow

        return tensorflow
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # what TensorFlow logs once it runs
    with native_stderr_muted():
        import tensorflow
    # absl's Python logging, which Keras and TensorFlow use for their own warnings.
    logging.getLogger("absl").setLevel(logging.ERROR)
    return tensorflow

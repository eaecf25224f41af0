"""The expected failures of the pipeline: each message says what is wrong and what to do.

Every stage's ``main()``, ``predict`` and ``repro-check`` turn a ``StageError`` into that
message and exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class StageError(RuntimeError):
    """A problem with the user's data or settings; the message says what to do."""


class ParamsError(StageError):
    """params.yaml is missing, unreadable or holds a value the pipeline cannot use."""


class MissingInputError(StageError):
    """A file that an earlier stage writes is not there: that stage has to run first."""


class RawDataError(StageError):
    """data/raw/ is missing or not laid out the way its source.json says."""

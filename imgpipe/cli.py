"""What every stage's ``main()`` shares: logging set-up and turning known errors into messages."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Callable

from imgpipe.atomic import disk_full_cause, human_size
from imgpipe.errors import StageError
from imgpipe.quiet_tf import LOG_LEVEL_VARIABLE

log = logging.getLogger("imgpipe")


def worker_count(requested: int) -> int:
    """0 means one worker per core this process may use."""
    if requested > 0:
        return requested
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def run_main(stage: str, body: Callable[[], object]) -> None:
    """Run a stage body; expected failures print one clear message and exit with status 2."""
    logging.basicConfig(
        level=os.environ.get(LOG_LEVEL_VARIABLE, "INFO").upper(),
        format=f"%(asctime)s {stage}: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        body()
    except StageError as err:
        log.error("%s", err)
        sys.exit(2)
    except Exception as err:
        # A full disk outside an atomic output (a backup, a log, a temporary file) is still
        # the user's to fix, not a bug: say where, once, instead of a chain of tracebacks.
        cause = disk_full_cause(err)
        if cause is None:
            raise
        where = cause.filename or f"the project ({os.getcwd()}) or TMPDIR"
        log.error(
            "no space left on the disk holding %s (%s free now): free some (`dvc gc "
            "--workspace` removes cached versions nothing uses), then rerun; the stage left no "
            "half output",
            where,
            human_size(shutil.disk_usage(".").free),
        )
        sys.exit(2)

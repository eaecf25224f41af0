"""validate: check params.yaml whole before any other stage starts.

Each stage parses all of params.yaml, but only a stage that runs parses it: a misspelt
section (``trian:``), an unknown key in a place no stage tracks (``prepare.sizee``) or a
wrong Augmentor operation name would otherwise pass `dvc repro` as "up to date", or be found
only after the earlier stages have spent their time. This stage depends on params.yaml as a
file, so any edit reruns it (it takes about a second), and ``download`` depends on what it
writes, so nothing starts on params that fail.

What it writes never varies, so a change that passes reruns only the stages whose own
params changed.
"""

from __future__ import annotations

import logging

from imgpipe import atomic
from imgpipe.augment_ops import check_operations
from imgpipe.cli import run_main
from imgpipe.layout import Layout
from imgpipe.params import Params, load_params

log = logging.getLogger("imgpipe.validate")


def run(layout: Layout) -> dict[str, object]:
    """Parse and check ``layout.params``; write ``layout.params_checked``; raise StageError."""
    params = load_params(layout.params)
    check_operations(params.augment.operations, params.augment.class_overrides)
    summary = {"file": layout.params.name, "sections": sorted(Params.model_fields)}
    atomic.write_json(layout.params_checked, summary)
    log.info("%s: every section, key and augment operation checked", layout.params)
    return summary


def main() -> None:
    run_main("validate", lambda: run(Layout()))


if __name__ == "__main__":
    main()

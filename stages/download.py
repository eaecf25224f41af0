"""download: fetch the configured source as it is, verified, into ``data/raw/``.

``download.source`` names a module of ``imgpipe.sources`` (digits, folder, archive, cifar10,
kaggle, crawl); that module fetches into a scratch folder, which replaces data/raw whole once
``data/raw/source.json`` (where everything came from) is written beside what it fetched.
Downloaded files are verified before use and kept as they are: an archive stays an archive,
because DVC tracks one file far faster than thousands.
"""

from __future__ import annotations

import logging

from imgpipe import atomic
from imgpipe.cli import run_main
from imgpipe.layout import Layout
from imgpipe.params import DownloadParams, load_params
from imgpipe.raw import SOURCE_FILE
from imgpipe.sources import SOURCES

log = logging.getLogger("imgpipe.download")


def run(params: DownloadParams, layout: Layout) -> dict[str, object]:
    """Fetch ``params.source`` into ``layout.raw``; return what ``source.json`` records.

    ``layout.downloads`` keeps partial and verified downloads between runs, outside data/raw
    (which DVC empties before the stage runs), so an interrupted download resumes and a
    finished one is not repeated.
    """
    source = SOURCES[params.source]
    with atomic.atomic_dir(layout.raw) as scratch:
        record = source.fetch(params, scratch, layout.downloads)
        atomic.write_json(scratch / SOURCE_FILE, record)
    log.info(
        "%s: %d images in %d classes", record["kind"], record["size"], len(record["class_names"])
    )
    return record


def main() -> None:
    run_main("download", lambda: run(load_params().download, Layout()))


if __name__ == "__main__":
    main()

"""download: fetch the configured source as it is, verified, into ``data/raw/``.

``download.source`` names a module of ``imgpipe.sources`` (digits, folder, archive, cifar10,
kaggle, crawl); that module fetches into a scratch folder, which replaces data/raw whole once
``data/raw/source.json`` (where everything came from) is written beside what it fetched.
Downloaded files are verified before use and kept as they are: an archive stays an archive,
because DVC tracks one file far faster than thousands.
"""

from __future__ import annotations

import logging
from collections import Counter

from imgpipe import atomic
from imgpipe.cli import run_main
from imgpipe.errors import StageError
from imgpipe.labels import CLUTTER, NOT_IN_CLASS_FOLDER
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
        check_two_classes(record)
        atomic.write_json(scratch / SOURCE_FILE, record)
    log.info("%s: %s", record["kind"], summary_line(record, layout.raw / SOURCE_FILE))
    return record


def check_two_classes(record: dict) -> None:
    """Stop on fewer than two classes: a model of one class learns nothing (loss 0)."""
    classes = record["class_names"]
    if len(classes) >= 2:
        return
    counts = record.get("counts") or dict.fromkeys(classes, record.get("size", 0))
    found = ", ".join(
        f"{name!r} with {counts[name]} file(s)" if name in counts else repr(name)
        for name in classes
    )
    where = record.get("path") or record.get("url") or record["kind"]
    raise StageError(
        f"download found {len(classes)} class ({found or 'none'}) in {where}: a classifier needs "
        "at least two. Put each class's images in its own folder directly below the root "
        "(cat/, dog/, ...; deeper folders belong to the class above them), point "
        "download.path at the folder that holds the class folders, "
        "or set download.label_pattern so that its group 1 gives two or more classes"
    )


# How the console names the reasons files are set aside (source.json keeps them in full).
SHORT_REASONS = {
    CLUTTER: "hidden or system files",
    NOT_IN_CLASS_FOLDER: "not inside a class folder",
}


def summary_line(record: dict, source_file) -> str:
    """E.g. "800 images in 2 classes; 12 files set aside (7 not inside a class folder, 5
    hidden or system files), listed in data/raw/source.json"."""
    line = f"{record['size']} images in {len(record['class_names'])} classes"
    if record.get("splits"):
        line += " (" + ", ".join(f"{n} {name}" for name, n in record["splits"].items()) + ")"
    skipped = record.get("skipped") or []
    if skipped:
        reasons = Counter(SHORT_REASONS.get(s["reason"], s["reason"]) for s in skipped)
        listing = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common())
        line += f"; {len(skipped)} files set aside ({listing}), listed in {source_file}"
    return line


def main() -> None:
    run_main("download", lambda: run(load_params().download, Layout()))


if __name__ == "__main__":
    main()

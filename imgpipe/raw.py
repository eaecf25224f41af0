"""Reading what ``download`` left in ``data/raw/``, whatever the source was.

``source.json`` names the source (``kind``) that wrote data/raw; that source's ``list_items``
(in ``imgpipe.sources``) turns it into items (origin, label, how to read the bytes), and this
module sorts them and gives the class names, so ``prepare`` never cares where images came from.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from imgpipe.errors import RawDataError

SOURCE_FILE = "source.json"
# A source.json written by hand (test fixtures, benchmarks) may name no real source; its
# layout then says which source's reader applies.
READER_OF_LAYOUT = {
    "class_folders": "digits",
    "folder": "folder",
    "archive": "archive",
    "cifar10": "cifar10",
    "table": "table",
}


@dataclass(frozen=True)
class RawItem:
    origin: str  # path relative to data/raw/ (or to the listed folder), shown in reports
    label: str
    read: Callable[[], bytes]
    split: str | None = None  # a split the source itself assigns (CIFAR-10's test batch)
    path: Path | None = None  # a plain local file, which a worker process can open itself
    group: str | None = None  # a group the source names (a table's group column): one split


def read_order(item: RawItem) -> tuple[str, str]:
    """The order prepare reads and writes items in: by label, then origin."""
    return item.label, item.origin


def read_source(raw_dir: Path) -> dict:
    path = Path(raw_dir) / SOURCE_FILE
    if not path.exists():
        raise RawDataError(f"{path} is missing: run the download stage first (dvc repro download)")
    return json.loads(path.read_text(encoding="utf-8"))


def list_items(raw_dir: Path) -> tuple[list[RawItem], list[str]]:
    """All candidate images sorted by (label, origin), and the class names in order."""
    # Imported here: every source module imports RawItem from this one.
    from imgpipe.sources import SOURCES

    raw_dir = Path(raw_dir)
    source = read_source(raw_dir)
    kind, layout = source.get("kind"), source.get("layout")
    name = kind if kind in SOURCES else READER_OF_LAYOUT.get(layout)
    if name is None:
        raise RawDataError(
            f"{raw_dir / SOURCE_FILE}: unknown kind {kind!r} and unknown layout {layout!r}; "
            "rerun the download stage (dvc repro -f download)"
        )
    items = SOURCES[name].list_items(raw_dir, source)
    classes = list(source.get("class_names") or sorted({item.label for item in items}))
    items.sort(key=read_order)
    return items, classes

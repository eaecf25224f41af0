"""Reading what ``download`` left in ``data/raw/``, whatever the source was.

``source.json`` says how the raw data is laid out; this module turns that into a sorted list
of items (origin, label, how to read the bytes), so ``prepare`` never cares where images
came from.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from imgpipe.cli import StageError

SOURCE_FILE = "source.json"
IGNORED_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}


class RawDataError(StageError):
    """data/raw/ is missing or not laid out the way its source.json says."""


@dataclass(frozen=True)
class RawItem:
    origin: str  # path relative to data/raw/, shown to people in reports
    label: str
    read: Callable[[], bytes]


def read_source(raw_dir: Path) -> dict:
    path = Path(raw_dir) / SOURCE_FILE
    if not path.exists():
        raise RawDataError(f"{path} is missing: run the download stage first (dvc repro download)")
    return json.loads(path.read_text(encoding="utf-8"))


def list_items(raw_dir: Path) -> tuple[list[RawItem], list[str]]:
    """All candidate images sorted by (label, origin), and the class names in order."""
    raw_dir = Path(raw_dir)
    source = read_source(raw_dir)
    layout = source.get("layout")
    if layout == "class_folders":
        items = _class_folder_items(raw_dir, raw_dir / source["root"])
    else:
        raise RawDataError(f"{raw_dir / SOURCE_FILE}: unknown layout {layout!r}")
    classes = list(source.get("class_names") or sorted({item.label for item in items}))
    items.sort(key=lambda item: (item.label, item.origin))
    return items, classes


def _class_folder_items(raw_dir: Path, root: Path) -> list[RawItem]:
    if not root.is_dir():
        raise RawDataError(f"{root} is not a folder of class folders")
    items = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(class_dir.rglob("*")):
            if path.is_file() and path.name not in IGNORED_NAMES:
                items.append(
                    RawItem(
                        origin=path.relative_to(raw_dir).as_posix(),
                        label=class_dir.name,
                        read=path.read_bytes,
                    )
                )
    return items

"""Reading what ``download`` left in ``data/raw/``, whatever the source was.

``source.json`` says how the raw data is laid out; this module turns that into a sorted list
of items (origin, label, how to read the bytes), so ``prepare`` never cares where images
came from. Layouts:

- ``class_folders``: image files under ``<root>/<class>/`` inside data/raw (digits, crawl);
- ``folder``: a listing (``files.csv``: path, label, size, sha256) of a folder outside the
  project, read in place; a file whose bytes changed since ``download`` is refused;
- ``archive``: a .zip, .tar or .tar.gz kept as downloaded, members read directly, labelled
  by folder or by a regular expression on the file name;
- ``cifar10``: the CIFAR-10 archive, each image returned as a PNG of its exact pixels, the
  test batch's items marked ``split="test"``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from imgpipe import cifar
from imgpipe.archives import Archive, Limits
from imgpipe.errors import RawDataError
from imgpipe.labels import IGNORED_NAMES, LabelRule, is_clutter

SOURCE_FILE = "source.json"
LISTING_FILE = "files.csv"
LISTING_COLUMNS = ["path", "label", "size", "sha256"]


@dataclass(frozen=True)
class RawItem:
    origin: str  # path relative to data/raw/ (or to the listed folder), shown in reports
    label: str
    read: Callable[[], bytes]
    split: str | None = None  # a split the source itself assigns (CIFAR-10's test batch)
    path: Path | None = None  # a plain local file, which a worker process can open itself


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
    readers = {
        "class_folders": lambda: _class_folder_items(raw_dir, raw_dir / source["root"]),
        "folder": lambda: _listed_folder_items(raw_dir, source),
        "archive": lambda: _archive_items(raw_dir, source),
        "cifar10": lambda: _cifar_items(raw_dir, source),
    }
    if layout not in readers:
        raise RawDataError(f"{raw_dir / SOURCE_FILE}: unknown layout {layout!r}")
    items = readers[layout]()
    # CIFAR-10's classes are fixed, whether or not a small sample holds each of them.
    default = cifar.CLASSES if layout == "cifar10" else sorted({item.label for item in items})
    classes = list(source.get("class_names") or default)
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
                        path=path,
                    )
                )
    return items


def read_listing(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _listed_folder_items(raw_dir: Path, source: dict) -> list[RawItem]:
    # A relative path is relative to the project, where DVC runs every stage.
    folder = Path(source["path"]).expanduser()
    if not folder.is_dir():
        raise RawDataError(
            f"the image folder {str(folder)!r} recorded by download is gone; restore it or "
            "point download.path at its new place and run `dvc repro`"
        )
    return [
        RawItem(
            origin=row["path"],
            label=row["label"],
            read=_verified_reader(folder, row["path"], row["sha256"]),
        )
        for row in read_listing(raw_dir / source.get("listing", LISTING_FILE))
    ]


def _verified_reader(folder: Path, relative: str, sha256: str) -> Callable[[], bytes]:
    def read() -> bytes:
        try:
            data = (folder / relative).read_bytes()
        except OSError as err:
            data, problem = None, f"cannot be read ({err.strerror})"
        if data is not None and hashlib.sha256(data).hexdigest() == sha256:
            return data
        if data is not None:
            problem = "changed"
        raise RawDataError(
            f"{folder / relative} {problem} since download listed the folder; run "
            "`dvc repro -f download` so the listing, and everything after it, is redone"
        )

    return read


def _open_archive(raw_dir: Path, source: dict) -> Archive:
    path = raw_dir / source["archive"]
    if not path.is_file():
        raise RawDataError(f"{path} is missing: run `dvc repro -f download`")
    return Archive(path, Limits(**source.get("limits", {})))


def _archive_items(raw_dir: Path, source: dict) -> list[RawItem]:
    archive = _open_archive(raw_dir, source)
    rule = LabelRule.from_dict(source.get("labels", {}))
    items = []
    for name in archive.names:
        label = None if is_clutter(name) else rule.label(name)
        if label is not None:
            items.append(
                RawItem(
                    origin=f"{source['archive']}/{name}",
                    label=label,
                    read=_member_reader(archive, name),
                )
            )
    return items


def _member_reader(archive: Archive, name: str) -> Callable[[], bytes]:
    return lambda: archive.read(name)


def _cifar_items(raw_dir: Path, source: dict) -> list[RawItem]:
    with _open_archive(raw_dir, source) as archive:
        batches = cifar.read_batches(archive)
    names = source.get("class_names") or cifar.CLASSES
    items = []
    for batch in batches:
        for index, label in enumerate(batch.labels):
            items.append(
                RawItem(
                    origin=f"{source['archive']}/{batch.name}/{index:05d}",
                    label=names[label],
                    read=_pixel_reader(batch, index),
                    split=batch.split,
                )
            )
    return items


def _pixel_reader(batch: cifar.Batch, index: int) -> Callable[[], bytes]:
    def read() -> bytes:
        # PNG is lossless, so prepare decodes exactly the published pixels.
        buffer = io.BytesIO()
        Image.fromarray(batch.images[index]).save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()

    return read

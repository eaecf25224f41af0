"""A local folder of images, labelled by class sub-folders or by a regular expression on file
names; listed in ``files.csv`` with each file's sha256, never copied.

``prepare`` reads the files in place and checks each against its listed sha256, so tens of
thousands of photos are neither duplicated in the project nor in DVC's cache, and a file
changed after the listing is refused rather than used unnoticed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import re
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import Field
from tqdm import tqdm

from imgpipe import atomic
from imgpipe.cli import worker_count
from imgpipe.errors import RawDataError, StageError
from imgpipe.file_hash import file_sha256
from imgpipe.labels import (
    LabelRule,
    escape_name,
    has_undecodable,
    is_clutter,
    rule_for,
    unescape_name,
)
from imgpipe.layout import local_path
from imgpipe.raw import RawItem
from imgpipe.sources.common import LabelPattern, Source, SourceParams, label_or_reason

log = logging.getLogger("imgpipe.download")

LISTING_FILE = "files.csv"
LISTING_COLUMNS = ["path", "label", "size", "sha256"]
# Written only when the folder holds split folders (train/, val/, test/): the file's own split.
SPLIT_COLUMN = "split"
# source.json "names": files.csv spells every path with imgpipe.labels.escape_name (written
# only when some name is not UTF-8; list_items maps each path back with unescape_name).
ESCAPED = "percent-escaped"


class FolderParams(SourceParams):
    source: Literal["folder"] = "folder"
    path: str = Field(
        description="a folder holding one sub-folder of images per class, or images named by "
        "class with download.label_pattern"
    )
    label_pattern: LabelPattern | None = Field(
        None, description="regular expression on file names; group 1 is the class"
    )


def _hash_file(path: Path) -> tuple[str, int] | str:
    """The file's sha256 and size, or why it cannot be read."""
    try:
        return file_sha256(path), path.stat().st_size
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"


def _not_a_file(path: Path) -> str | None:
    """Why a listed path holds no image bytes to read, or None for a regular file."""
    if path.is_file():
        return None
    if path.is_symlink():
        return "link to a folder, not followed" if path.is_dir() else "broken symbolic link"
    if path.is_dir():
        return ""  # a folder: its files are listed themselves
    return "not a regular file (device, pipe or socket)"


# Suggested when class names start file names, as in Kaggle's cat.0.jpg and dog.0.jpg.
LEADING_WORD = r"^([A-Za-z]+)[._ -]"


def _no_labelled_files(folder: Path, pattern: str | None, skipped: list[dict]) -> str:
    """Why no file got a class, and the setting that would give them one."""
    loose = [entry["path"] for entry in skipped if "/" not in entry["path"]]
    where = f"download.path {str(folder)!r}"
    if pattern:
        example = f" (e.g. {loose[0]!r})" if loose else ""
        return (
            f"{where}: no file name matches download.label_pattern '{pattern}'{example}; its "
            "group 1 must capture the class, e.g. '^(cat|dog)\\.' for cat.0.jpg"
        )
    hint = "put the images of each class in a sub-folder named after the class"
    if loose:
        match = re.match(LEADING_WORD, PurePosixPath(loose[0]).name)
        example = f" (it gives {match.group(1)!r} for {loose[0]!r})" if match else ""
        hint += (
            ", or take classes from the file names with download.label_pattern, e.g. "
            f"label_pattern: '{LEADING_WORD}'{example}"
        )
    return (
        f"{where} has no images in class sub-folders ({len(loose)} file(s) lie directly in "
        f"it): {hint}"
    )


def fetch(params: FolderParams, out_dir: Path, downloads_dir: Path) -> dict[str, object]:
    """List the folder's images, their classes and sha256 in ``files.csv``; copy nothing.

    ``download.path`` is recorded as written: a path relative to the project (where DVC runs
    the stages) keeps ``source.json`` the same in every clone and on every machine.
    """
    written = Path(params.path)
    folder = local_path(written).resolve()
    pattern = params.label_pattern
    if not folder.is_dir():
        raise StageError(
            f"download.path {str(folder)!r} is not a folder; point it at a folder holding one "
            "sub-folder of images per class, or images named by class with download.label_pattern"
        )
    found = {path.relative_to(folder).as_posix(): path for path in folder.rglob("*")}
    # Links to folders are not followed, so no folder found here lies behind one.
    folders = [rel for rel, path in found.items() if path.is_dir() and not path.is_symlink()]
    rule = rule_for(pattern, folders)
    # Names that are not UTF-8 make the whole listing percent-escaped (reversibly); a listing
    # without such names is written exactly as before.
    escaped = any(has_undecodable(relative) for relative in found)
    spell = escape_name if escaped else str
    rows, real_paths, skipped = [], [], []
    for relative, path in sorted(found.items()):
        problem = _not_a_file(path)
        if problem is not None:
            if problem:
                skipped.append({"path": spell(relative), "reason": problem})
            continue
        label, split, reason = label_or_reason(rule, relative)
        if label is None:
            skipped.append({"path": spell(relative), "reason": reason})
        else:
            rows.append({"path": spell(relative), "label": spell(label)})
            if rule.split_folders:
                rows[-1]["split"] = split
            real_paths.append(relative)
    if not rows:
        raise StageError(_no_labelled_files(folder, pattern, skipped))
    # Every class seen, even if all its files are set aside below: prepare then reports it
    # with 0 images instead of the class vanishing without a word.
    class_names = sorted(
        {row["label"] for row in rows}
        if pattern
        else {spell(rule.folder_class(rel)) for rel in folders if _is_class_folder(rule, rel)}
    )
    with ThreadPoolExecutor(worker_count(0) * 2) as pool:
        hashes = pool.map(_hash_file, (folder / relative for relative in real_paths))
        for row, hashed in tqdm(
            zip(rows, hashes, strict=True), total=len(rows), desc="hash", unit="file"
        ):
            if isinstance(hashed, str):
                skipped.append({"path": row["path"], "reason": hashed})
            else:
                row.update(sha256=hashed[0], size=hashed[1])
    rows = [row for row in rows if "sha256" in row]
    skipped.sort(key=lambda entry: entry["path"])
    if not rows:
        raise StageError(f"download.path {str(folder)!r}: none of its images can be read")
    _warn_empty(class_names, rows)
    columns = LISTING_COLUMNS + [SPLIT_COLUMN] * rule.split_folders
    write_listing(out_dir / LISTING_FILE, rows, columns)
    listing = hashlib.sha256((out_dir / LISTING_FILE).read_bytes()).hexdigest()
    record = {
        "kind": "folder",
        "url": None,
        "path": written.as_posix(),
        "sha256": listing,  # of files.csv, which holds every file's own sha256
        "size": len(rows),
        "bytes": sum(row["size"] for row in rows),
        "class_names": class_names,
        "labels": rule.to_dict(),
        "layout": "folder",
        "listing": LISTING_FILE,
        "skipped": skipped,
    }
    if rule.split_folders:
        record["splits"] = dict(sorted(Counter(row["split"] for row in rows).items()))
    if escaped:
        record["names"] = ESCAPED
    return record


def _is_class_folder(rule: LabelRule, relative: str) -> bool:
    return not is_clutter(relative) and rule.folder_class(relative) is not None


def _warn_empty(class_names: list[str], rows: list[dict]) -> None:
    empty = sorted(set(class_names) - {row["label"] for row in rows})
    if empty:
        log.warning(
            "class(es) %s hold no usable file; prepare will stop on them "
            "(see prepare.min_per_class)",
            ", ".join(map(repr, empty)),
        )


def write_listing(path: Path, rows: list[dict], columns: list[str]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic.write_text(path, buffer.getvalue())


def read_listing(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def list_items(raw_dir: Path, source: dict) -> list[RawItem]:
    """The listed files, read in place from the folder and checked against their sha256."""
    # A relative path is relative to the project, where DVC runs every stage.
    folder = local_path(source["path"])
    if not folder.is_dir():
        raise RawDataError(
            f"the image folder {str(folder)!r} recorded by download is gone; restore it or "
            "point download.path at its new place and run `dvc repro`"
        )
    real = unescape_name if source.get("names") == ESCAPED else str
    return [
        RawItem(
            origin=row["path"],
            label=row["label"],
            read=verified_reader(folder, real(row["path"]), row["sha256"]),
            split=row.get(SPLIT_COLUMN) or None,
        )
        for row in read_listing(raw_dir / source.get("listing", LISTING_FILE))
    ]


def verified_reader(folder: Path, relative: str, sha256: str) -> Callable[[], bytes]:
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
            f"{folder / relative} {problem} since download listed it; run "
            "`dvc repro -f download` so the listing, and everything after it, is redone"
        )

    return read


SOURCE = Source("folder", FolderParams, fetch, list_items)

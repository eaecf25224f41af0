"""Outputs appear whole or not at all: build beside the target, then rename into place.

A disk that fills while an output is built leaves the old output as it was, removes the
scratch copy, and stops the stage with one message naming the output and the space it needed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from imgpipe.errors import StageError


class DiskFullError(StageError):
    """The disk filled while a stage wrote its output."""


def disk_full_cause(err: BaseException) -> OSError | None:
    """The "no space left" error behind ``err``, following what it was raised from, or None.

    Pools, writers and cleanups re-raise a full disk as other errors; the cause says it all.
    """
    seen = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return current
        current = current.__cause__ or current.__context__
    return None


def _size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def human_size(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def disk_full_message(target: Path, written: int, cause: OSError) -> str:
    """What filled, how much the output had reached, what is free, and what to do."""
    folder = target.parent if target.parent.exists() else Path(".")
    free = shutil.disk_usage(folder).free
    where = f" (writing {cause.filename})" if cause.filename else ""
    return (
        f"the disk holding {target} is full{where}: the new output had reached "
        f"{human_size(written)} when it filled and {human_size(free)} is free now, so it needs "
        f"more than {human_size(written)} of free space; free some (`dvc gc --workspace` "
        "removes cached versions that nothing in the workspace uses) or move the project, "
        "then rerun"
    )


def _partial_path(target: Path) -> Path:
    # A dot-prefixed sibling on the same filesystem, so the final rename is atomic and a
    # leftover from a killed run is never mistaken for the real output.
    return target.with_name(f".{target.name}.partial")


@contextlib.contextmanager
def atomic_dir(target: Path | str) -> Iterator[Path]:
    """Yield an empty scratch directory that replaces ``target`` only if the block succeeds."""
    target = Path(target)
    scratch = _partial_path(target)
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        yield scratch
    except BaseException as err:
        cause = disk_full_cause(err)
        written = _size_of(scratch) if cause is not None else 0
        shutil.rmtree(scratch, ignore_errors=True)
        if cause is not None:
            raise DiskFullError(disk_full_message(target, written, cause)) from None
        raise
    replace_path(scratch, target)


def replace_path(source: Path, target: Path) -> None:
    """Move ``source`` onto ``target``, removing whatever ``target`` held before."""
    if target.is_dir() and not target.is_symlink():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(source, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)


def write_bytes(target: Path | str, data: bytes) -> None:
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = _partial_path(target)
    try:
        scratch.write_bytes(data)
    except OSError as err:
        scratch.unlink(missing_ok=True)
        if disk_full_cause(err) is not None:
            raise DiskFullError(disk_full_message(target, len(data), err)) from None
        raise
    os.replace(scratch, target)


def write_text(target: Path | str, text: str) -> None:
    write_bytes(target, text.encode("utf-8"))


def write_json(target: Path | str, obj: object) -> None:
    """Stable JSON (sorted keys, fixed indent) so equal content gives equal bytes."""
    write_text(target, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")

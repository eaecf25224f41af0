"""Outputs appear whole or not at all: build beside the target, then rename into place."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


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
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
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
    scratch.write_bytes(data)
    os.replace(scratch, target)


def write_text(target: Path | str, text: str) -> None:
    write_bytes(target, text.encode("utf-8"))


def write_json(target: Path | str, obj: object) -> None:
    """Stable JSON (sorted keys, fixed indent) so equal content gives equal bytes."""
    write_text(target, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")

"""Saving a Keras model so that the same weights always give the same bytes.

``model.save`` writes a zip whose ``metadata.json`` holds the time of saving, whose weights
member carries the current time as its zip date, and whose ``config.json`` numbers the
objects layers share (a dtype policy, say) by their memory address, so every run of
``train`` gave a new ``model.keras``: ``dvc.lock`` changed after each ``dvc repro`` and DVC's
cache grew by a copy of the model each time, although the weights were identical. Here the
archive is rewritten with fixed dates, members in the order Keras wrote them, the save time
replaced by a constant and the shared objects numbered in order of appearance (the same
object keeps one number, so Keras links them again on loading), so its bytes depend on the
model alone.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

FIXED_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip can hold
FIXED_SAVE_TIME = "1980-01-01@00:00:00"
METADATA = "metadata.json"
CONFIG = "config.json"
SHARED_ID = "shared_object_id"


def _stable_metadata(data: bytes) -> bytes:
    metadata = json.loads(data)
    if "date_saved" in metadata:
        metadata["date_saved"] = FIXED_SAVE_TIME
    return json.dumps(metadata).encode("utf-8")


def _renumbered(value: Any, numbers: dict[int, int]) -> Any:
    """``value`` with every shared object id replaced by its order of first appearance."""
    if isinstance(value, dict):
        result = {}
        for key, inner in value.items():
            if key == SHARED_ID and isinstance(inner, int):
                result[key] = numbers.setdefault(inner, len(numbers) + 1)
            else:
                result[key] = _renumbered(inner, numbers)
        return result
    if isinstance(value, list):
        return [_renumbered(inner, numbers) for inner in value]
    return value


def _stable_config(data: bytes) -> bytes:
    return json.dumps(_renumbered(json.loads(data), {})).encode("utf-8")


def make_deterministic(source: Path, target: Path) -> None:
    """Copy the Keras archive ``source`` to ``target`` with every varying field fixed."""
    with (
        zipfile.ZipFile(source) as original,
        zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as stable,
    ):
        for member in original.infolist():
            data = original.read(member)
            if member.filename == METADATA:
                data = _stable_metadata(data)
            elif member.filename == CONFIG:
                data = _stable_config(data)
            info = zipfile.ZipInfo(member.filename, date_time=FIXED_DATE)
            info.compress_type = member.compress_type
            info.external_attr = 0o644 << 16  # a regular file, readable by all
            stable.writestr(info, data)


def save_model(model: Any, path: Path) -> None:
    """``model.save(path)`` with bytes that depend only on the model's config and weights."""
    path = Path(path)
    unstable = path.with_name(f".{path.stem}.unstable{path.suffix}")
    try:
        model.save(unstable)
        make_deterministic(unstable, path)
    finally:
        if unstable.exists():
            os.unlink(unstable)

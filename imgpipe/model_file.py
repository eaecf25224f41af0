"""Saving a Keras model so that the same weights always give the same bytes.

``model.save`` writes a zip whose ``metadata.json`` holds the time of saving and whose weights
member carries the current time as its zip date, so every run of ``train`` gave a new
``model.keras``: ``dvc.lock`` changed after each ``dvc repro`` and DVC's cache grew by a
copy of the model each time, although the weights were identical. Here the archive is
rewritten with fixed dates, members in the order Keras wrote them, and the save time
replaced by a constant, so its bytes depend on the model alone.
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


def _stable_metadata(data: bytes) -> bytes:
    metadata = json.loads(data)
    if "date_saved" in metadata:
        metadata["date_saved"] = FIXED_SAVE_TIME
    return json.dumps(metadata).encode("utf-8")


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

"""A content-addressed cache of per-image results, kept between runs outside DVC's outputs.

DVC empties a stage's outputs before it runs, so a stage that redoes only what changed keeps
what it made elsewhere: one small file per result, named by the sha256 of (a fingerprint of
everything besides the input that decides the result, the input's own content hash). A
result is found again only when the input bytes and the settings are the same, so reusing it
gives the bytes a fresh computation would.

Safe under concurrent runs (two experiments sharing one cache) without locks: an entry is
written to a temporary file in its final folder and renamed into place, so a reader sees a
whole entry or none; two writers of one entry write the same bytes. Every entry carries the
sha256 of its payload, so one truncated or damaged on disk (a full disk, a killed run, a bad
copy) reads as missing and is made again. The cache's total size is bounded: once a run has
added entries, the oldest entries are removed until it fits (oldest by modification time;
a hit does not refresh it, which would cost a write per image).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from imgpipe.layout import original_project

log = logging.getLogger("imgpipe.content_cache")

MAGIC = b"imgpipe-cache-1\n"
DIGEST = 32  # bytes of the payload's sha256 that follow MAGIC
# Temporary files of writers that died are removed by the next eviction after this long.
STALE_TEMP_SECONDS = 3600
TEMP_PREFIX = ".tmp-"


def resolve_dir(written: str | Path) -> Path:
    """The cache folder named in params: a relative one is relative to the project.

    In a DVC experiment's temporary copy (``.dvc/tmp/exps/...``) it is the original project's
    folder, so queued experiments share the cache with ``dvc repro`` instead of starting cold.
    """
    path = Path(written).expanduser()
    if path.is_absolute():
        return path
    return (original_project() or Path.cwd()) / path


def code_digest(modules: list[ModuleType]) -> str:
    """sha256 of the source files of ``modules``: any change to the code that makes a result
    makes the results it made before unreachable, so no stale result is ever reused."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(Path(module.__file__ or "").read_bytes())
    return digest.hexdigest()


def fingerprint(settings: dict[str, object], modules: list[ModuleType]) -> str:
    """One hash of the settings (params, library versions) and the code behind a result."""
    text = json.dumps(
        {"settings": settings, "code": code_digest(modules)}, sort_keys=True, default=str
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _wrap(payload: bytes) -> bytes:
    return MAGIC + hashlib.sha256(payload).digest() + payload


def unwrap(entry: bytes) -> bytes | None:
    """The payload of a whole, undamaged entry, else None."""
    head = len(MAGIC) + DIGEST
    if len(entry) < head or not entry.startswith(MAGIC):
        return None
    payload = entry[head:]
    if hashlib.sha256(payload).digest() != entry[len(MAGIC) : head]:
        return None
    return payload


@dataclass
class ContentCache:
    """Entries of one kind of result under ``directory``, for one settings ``fingerprint``."""

    directory: Path
    fingerprint: str
    max_bytes: int
    written: int = 0  # entries this process added, to know whether eviction is due

    def _path(self, content_hash: str) -> Path:
        name = hashlib.sha256(f"{self.fingerprint}:{content_hash}".encode()).hexdigest()
        return self.directory / name[:2] / name

    def get(self, content_hash: str) -> bytes | None:
        """The payload stored for ``content_hash``, or None if absent or damaged."""
        try:
            with open(self._path(content_hash), "rb") as handle:
                entry = handle.read()
        except OSError:
            return None
        return unwrap(entry)

    def put(self, content_hash: str, payload: bytes) -> None:
        """Store ``payload``; a cache that cannot be written only costs speed, never a run."""
        path = self._path(content_hash)
        temp = path.with_name(f"{TEMP_PREFIX}{path.name}.{os.getpid()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(temp, "wb") as handle:
                handle.write(_wrap(payload))
            os.replace(temp, path)
        except OSError as err:
            log.debug("cannot write cache entry %s: %s", path, err)
            with contextlib.suppress(OSError):
                temp.unlink()
            return
        self.written += 1


def evict(directory: Path, max_bytes: int) -> int:
    """Remove the oldest entries until those under ``directory`` total at most ``max_bytes``.

    Returns how many were removed. Another run may be reading an entry meanwhile: on POSIX
    its open file stays readable, and one that opens it a moment later finds none and makes
    the result again.
    """
    entries: list[tuple[float, int, str]] = []
    now = time.time()
    try:
        folders = [d.path for d in os.scandir(directory) if d.is_dir()]
    except OSError:
        return 0
    for folder in folders:
        with contextlib.suppress(OSError):
            for entry in os.scandir(folder):
                info = entry.stat()
                if entry.name.startswith(TEMP_PREFIX):
                    if now - info.st_mtime > STALE_TEMP_SECONDS:
                        with contextlib.suppress(OSError):
                            os.unlink(entry.path)
                    continue
                entries.append((info.st_mtime, info.st_size, entry.path))
    total = sum(size for _, size, _ in entries)
    removed = 0
    for _, size, path in sorted(entries):
        if total <= max_bytes:
            break
        with contextlib.suppress(OSError):
            os.unlink(path)
            removed += 1
        total -= size
    if removed:
        log.info("cache %s: removed the %d oldest entries to fit its size", directory, removed)
    return removed

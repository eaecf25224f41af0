"""A file's sha256, and a file checked against the one it is expected to be."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from imgpipe.fetch_errors import ChecksumMismatch


@dataclass(frozen=True)
class Fetched:
    path: Path
    sha256: str
    size: int


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verified_file(path: Path, expected: str | None, what: str) -> Fetched:
    """Hash ``path``; if a checksum is expected, a mismatch is an error that names both."""
    actual = file_sha256(path)
    if expected and actual != expected.lower():
        raise ChecksumMismatch(
            f"{what}: sha256 is {actual}, expected {expected.lower()}. The file is corrupt, "
            "truncated or not the one the params name; check the URL and the sha256 in "
            "params.yaml (a mirror must serve the identical file)."
        )
    return Fetched(path, actual, path.stat().st_size)

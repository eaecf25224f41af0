"""Checks of a zip archive that zipfile does not make: what its end record declares against
what its central directory holds, entries whose data overlap, and members it cannot read."""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path

from imgpipe.archive_rules import REPACK, ArchiveError

ZIP_METHODS = {
    zipfile.ZIP_STORED: "stored",
    zipfile.ZIP_DEFLATED: "deflate",
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "lzma",
}


def zip_entry_count(path: Path) -> int | None:
    """The member count the zip's end record declares, or None when there is no end record.

    Read before zipfile builds an entry per central-directory record, so a directory of
    millions of entries is refused by the member limit before it costs the memory.
    """
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        start = max(0, size - (22 + 65535))
        tail = os.pread(handle.fileno(), size - start, start)
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) - at < 22:
            return None
        entries, _, cd_offset = struct.unpack("<HLL", tail[at + 10 : at + 20])
        if entries != 0xFFFF and cd_offset != 0xFFFFFFFF:
            return entries
        # zip64: the locator sits just before the end record, the zip64 record before it.
        record_at = start + at - 20 - 56
        record = os.pread(handle.fileno(), 56, record_at) if record_at >= 0 else b""
        if len(record) < 56 or record[:4] != b"PK\x06\x06":
            return None
        return struct.unpack("<Q", record[32:40])[0]


def check_zip_member(info: zipfile.ZipInfo, shown: str, archive: str) -> None:
    """Refuse a member zipfile cannot read: encrypted, or compressed by an unknown method."""
    if info.flag_bits & 0x1:
        raise ArchiveError(
            f"{archive}: member {shown} is encrypted, and the pipeline reads no "
            "passwords; unpack the archive and pack it again without encryption"
        )
    if info.compress_type not in ZIP_METHODS:
        raise ArchiveError(
            f"{archive}: member {shown} is compressed with method "
            f"{info.compress_type}, which cannot be read here (only "
            f"{', '.join(ZIP_METHODS.values())}); pack the archive again"
        )


def check_zip_spans(path: Path, zip_file: zipfile.ZipFile, infos: list[zipfile.ZipInfo]) -> None:
    """Refuse entries whose bytes overlap: one compressed blob unpacked many times over.

    Each entry's local header and data, from the central directory's offset and
    compressed size, must end before the next entry begins and before the directory.
    """
    end_of_data = getattr(zip_file, "start_dir", None) or path.stat().st_size
    previous, reach = None, 0
    with open(path, "rb") as handle:
        for info in sorted(infos, key=lambda i: i.header_offset):
            shown = repr(info.filename)
            if info.header_offset < reach:
                raise ArchiveError(
                    f"{path.name}: members {previous!r} and {shown} overlap (the "
                    f"first runs to byte {reach}, the second starts at byte "
                    f"{info.header_offset}): a zip made to unpack far more than it holds "
                    "(a zip bomb); refusing it"
                )
            header = os.pread(handle.fileno(), 30, info.header_offset)
            if len(header) < 30 or header[:4] != b"PK\x03\x04":
                raise ArchiveError(
                    f"{path.name}: member {shown} has no local header at byte "
                    f"{info.header_offset}; the archive is corrupt: {REPACK}"
                )
            name_length, extra_length = struct.unpack("<HH", header[26:30])
            reach = info.header_offset + 30 + name_length + extra_length + info.compress_size
            previous = info.filename
    if reach > end_of_data:
        raise ArchiveError(
            f"{path.name}: member {previous!r} runs to byte {reach}, into the central "
            f"directory at byte {end_of_data}; the archive is corrupt or made to mislead: "
            f"{REPACK}"
        )

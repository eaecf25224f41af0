"""Reading a .tar or .tar.gz stream front to back, and finding tar headers where none belong.

A .tar.gz cannot be read at an offset without decompressing everything before it, so its
members are read by forward passes that refuse to go back; a plain .tar is read at offsets.
While a stream is read, every block-aligned tar header in it is noted, so a member whose size
field is too large (and so hides the members after it) is found.
"""

from __future__ import annotations

import bisect
import gzip
import os
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from imgpipe.archive_rules import CHUNK, REPACK, ArchiveError, human_size

BLOCK = tarfile.BLOCKSIZE


@dataclass(frozen=True)
class TarMember:
    offset: int  # where its data starts in the (uncompressed) tar stream
    size: int


def check_embedded_headers(found: list[int], members: dict[str, TarMember], archive: str) -> None:
    """A tar header inside a member's data: its size field hides the members after it."""
    spans = sorted((m.offset, m.offset + m.size, name) for name, m in members.items())
    starts = [start for start, _, _ in spans]
    for position in found:
        at = bisect.bisect_right(starts, position) - 1
        if at < 0:
            continue
        start, end, name = spans[at]
        # A .tar stored inside the archive holds tar headers of its own, honestly.
        if position < end and not name.lower().endswith(".tar"):
            raise ArchiveError(
                f"{archive}: member {name!r} declares {end - start} bytes, and a tar "
                f"header sits inside them at byte {position}: its size field is too large "
                f"and hides the members after it; {REPACK}"
            )


def pread_chunks(handle: BinaryIO, member: TarMember, archive: str) -> Iterator[bytes]:
    offset, end = member.offset, member.offset + member.size
    while offset < end:
        chunk = os.pread(handle.fileno(), min(CHUNK, end - offset), offset)
        if not chunk:
            return  # short: the caller names the member
        offset += len(chunk)
        yield chunk


class ForwardReader:
    """A file read front to back only (a gzip stream, or a plain .tar while listing it).

    Skipping ahead reads what it skips, except in a plain file when nothing is scanned;
    going back is refused, so no read ever silently decompresses a stream again from its
    start. ``budget`` bounds how far it may go, ``header_limit`` a single read.
    """

    def __init__(
        self,
        raw: BinaryIO,
        budget: int,
        archive: str,
        scan: HeaderScan | None = None,
        seekable: bool = False,
        header_limit: int | None = None,
    ) -> None:
        self._raw = raw
        self._budget = budget
        self._archive = archive
        self._scan = scan
        self._seekable = seekable and scan is None
        self._header_limit = header_limit
        self.position = 0
        self.recent = (0, b"")  # the last piece read (not skipped) and where it started

    def read(self, size: int = -1, limit: bool = True) -> bytes:
        if size is None or size < 0 or (limit and self._header_limit and size > self._header_limit):
            raise ArchiveError(
                f"{self._archive}: a tar header at byte {self.position} asks for "
                f"{'all the rest' if size is None or size < 0 else human_size(size)} of data; "
                "refusing it as a likely archive bomb"
            )
        data = self._raw.read(size)
        self.recent = (self.position, data)
        self._advance(data)
        return data

    def _advance(self, data: bytes) -> None:
        if self._scan is not None:
            self._scan.feed(self.position, data)
        self.position += len(data)
        if self.position > self._budget:
            raise ArchiveError(
                f"{self._archive} decompresses to more than {self._budget} bytes; refusing it "
                "as a likely archive bomb"
            )

    def skip_to(self, target: int) -> None:
        if target < self.position:
            raise ArchiveError(f"{self._archive}: cannot read backwards to byte {target}")
        if self._seekable:
            self._raw.seek(target)
            self.position = target
            return
        while self.position < target:
            data = self._raw.read(min(CHUNK, target - self.position))
            if not data:
                return  # at the end: the next read says so
            self._advance(data)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self.skip_to(offset if whence == os.SEEK_SET else self.position + offset)
        return self.position

    def tell(self) -> int:
        return self.position

    def close(self) -> None:
        self._raw.close()


class GunzipReader:
    """A gzip file's decompressed bytes, read front to back in large pieces.

    ``gzip.GzipFile`` in Python 3.11 feeds zlib 8 KiB at a time, whose overhead costs more
    than the decompression itself. zlib checks each member's CRC and length; members follow
    one another, and zero padding may follow the last, as gzip allows.
    """

    def __init__(self, path: Path) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 (closed by close())
        self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._input = b""
        self._piece, self._at = b"", 0

    def read(self, size: int) -> bytes:
        pieces = []
        while size > 0 and (self._at < len(self._piece) or self._fill()):
            piece = self._piece[self._at : self._at + size]
            self._at += len(piece)
            size -= len(piece)
            pieces.append(piece)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _fill(self) -> bool:
        while True:
            if self._inflater.eof:
                rest = self._inflater.unused_data.lstrip(b"\0")
                while not rest:
                    more = self._file.read(CHUNK)
                    if not more:
                        return False  # the end, after whole members and zero padding
                    rest = more.lstrip(b"\0")
                if not rest.startswith(b"\x1f\x8b"):
                    raise gzip.BadGzipFile("data after the end of the gzip stream")
                self._inflater, self._input = zlib.decompressobj(16 + zlib.MAX_WBITS), rest
            if not self._input:
                self._input = self._file.read(CHUNK)
                if not self._input:
                    raise EOFError("the compressed stream ends before its end marker")
            piece = self._inflater.decompress(self._input, CHUNK)
            self._input = self._inflater.unconsumed_tail
            if piece:
                self._piece, self._at = piece, 0
                return True

    def close(self) -> None:
        self._file.close()


class HeaderScan:
    """Every block-aligned position of a stream where a valid ustar header starts."""

    def __init__(self) -> None:
        self.found: list[int] = []
        self._carry = b""  # the start of a block cut by the end of the last piece

    def feed(self, position: int, data: bytes) -> None:
        buffer = self._carry + data if self._carry else data
        start = position - len(self._carry)  # a block boundary: pieces arrive in order
        whole = len(buffer) - len(buffer) % BLOCK
        at = buffer.find(b"ustar", 257, whole)
        while at >= 0:
            base = at - 257
            if base % BLOCK == 0 and _is_header(buffer[base : base + BLOCK]):
                self.found.append(start + base)
            at = buffer.find(b"ustar", at + 1, whole)
        self._carry = bytes(buffer[whole:])


def _is_header(block: bytes) -> bool:
    try:
        stored = int(block[148:156].split(b"\0")[0].strip() or b"x", 8)
    except ValueError:
        return False
    return stored == sum(block[:148]) + sum(block[156:]) + 8 * 32

"""Reading .zip, .tar and .tar.gz archives member by member, refusing anything unsafe.

Archives are never extracted: members are read into memory one at a time, so nothing from
an archive is ever written to disk under a name it chose. The archive is still checked as a
whole before use, because a member that names ``../x``, ``/etc/x``, a link or a device file
means the archive was made to attack whoever extracts it, and its other members cannot be
trusted either.

What an archive declares is checked against what it holds, so a hostile or damaged one stops
with a message naming the member instead of a traceback, an exhausted memory or a member
quietly missing:

- limits on member count and total uncompressed size apply to the declared sizes when the
  archive is opened and again to the bytes actually produced while reading; one member is
  read in chunks and never past ``max_member_bytes`` (a larger one is ``MemberTooLarge``);
- zip: the end record's entry count must match the central directory, entries whose data
  overlap (the overlapping-file zip bomb, whose entries share one compressed blob) refuse the
  archive, encrypted members and unknown compression methods are refused by name, and every
  member read is CRC-checked and must hold exactly its declared size;
- tar: after the last member only the end-of-archive zero blocks may follow, so a size field
  that is too small (the next header would be read from inside a member) or a truncated
  archive is an error, not a shorter listing; ``test_integrity`` also finds tar headers inside
  a member's data, where a size field that is too large hides the members after it;
- a .tar.gz is read front to back without a temporary copy when the order of reads allows it
  (a few forward passes); only otherwise is it inflated into a temporary file, whose exact
  size is known from the listing and checked against the free space first.

Member names are normalized (``cat/./a.png`` and ``cat//a.png`` are ``cat/a.png``); two
members with one normalized name refuse the archive, since one of them would be lost.
"""

from __future__ import annotations

import bisect
import contextlib
import gzip
import os
import shutil
import stat
import struct
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from imgpipe.errors import StageError

MAX_MEMBERS = 1_000_000
MAX_TOTAL_BYTES = 64 * 1024**3
# Well above any real image (a 100-megapixel 16-bit TIFF is 600 MB uncompressed, as a JPEG
# tens of MB), well below what would strain memory: one member is held whole while read.
MAX_MEMBER_BYTES = 256 * 1024**2
CHUNK = 1 << 20
BLOCK = tarfile.BLOCKSIZE
# Forward passes over a .tar.gz that a planned order of reads may take before the archive is
# inflated into a temporary file instead: a tree read class by class within split folders
# needs one per split folder; a shuffled archive needs one per read.
MAX_STREAMS = 4
# The largest single read tarfile may make while listing: a pax or long-name header's data.
# Real ones are a few hundred bytes; a hostile one could declare gigabytes.
MAX_HEADER_BYTES = 1 << 20
# Free space to leave in the temporary folder after inflating a .tar.gz there.
TEMP_MARGIN = 256 * 1024**2
ZIP_METHODS = {
    zipfile.ZIP_STORED: "stored",
    zipfile.ZIP_DEFLATED: "deflate",
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "lzma",
}
REPACK = "download it again, or unpack it with a tool you trust and pack it again"


class UnsafeArchive(StageError):
    """The archive holds a member that no honest image archive needs."""


class ArchiveError(StageError):
    """The archive is corrupt, unreadable or over a limit."""


class MemberTooLarge(ArchiveError):
    """One member is larger than ``Limits.max_member_bytes``; nothing of it was kept.

    ``prepare`` rejects it as that image's reason (kind ``too_large``) and goes on; a reader
    that needs the member (a CIFAR-10 batch) stops with this message.
    """


@dataclass(frozen=True)
class Limits:
    max_members: int = MAX_MEMBERS
    max_total_bytes: int = MAX_TOTAL_BYTES
    max_member_bytes: int = MAX_MEMBER_BYTES


@dataclass(frozen=True)
class _TarMember:
    offset: int  # where its data starts in the (uncompressed) tar stream
    size: int


def archive_format(path: Path) -> str:
    """'zip', 'tar' or 'tar.gz', from the file's first bytes rather than its name."""
    with open(path, "rb") as handle:
        head = handle.read(512)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "tar.gz"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    raise ArchiveError(f"{path.name} is not a .zip, .tar or .tar.gz archive")


def check_member_name(name: str, archive: str) -> str:
    """The member's normalized path, or UnsafeArchive when it could land outside a folder.

    ``.`` parts and repeated slashes are dropped (``cat/./a.png`` is ``cat/a.png``): an
    extractor would write them to the same place, so they name the same file.
    """
    if "\\" in name or "\0" in name:
        raise UnsafeArchive(f"{archive}: member {name!r} has a backslash or NUL in its name")
    path = PurePosixPath(name)
    if path.is_absolute() or (path.parts and path.parts[0].endswith(":")):
        raise UnsafeArchive(f"{archive}: member {name!r} has an absolute path")
    if ".." in path.parts:
        raise UnsafeArchive(f"{archive}: member {name!r} climbs out of the archive with '..'")
    return path.as_posix()


def _size(count: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"


def _spelled(name: str, raw: str) -> str:
    return repr(name) if name == raw else f"{name!r} (written {raw!r})"


class Archive:
    """A validated archive: ``names`` lists its regular files, ``read`` returns one's bytes."""

    def __init__(self, path: Path, limits: Limits = Limits()) -> None:
        self.path = Path(path)
        self.format = archive_format(self.path)
        self._limits = limits
        self._folders: set[str] = set()
        self._written: dict[str, str] = {}  # a file's name as written, where normalizing changed it
        self._read_total = 0
        self._zip: zipfile.ZipFile | None = None
        self._tar_file: BinaryIO | None = None  # a plain .tar, read at offsets
        self._streams: list[_Forward] = []  # forward passes over a .tar.gz
        self._inflated: BinaryIO | None = None  # a .tar.gz inflated into a temporary file
        self._inflate_first = False
        self._tar_end = 0  # where the last member's data ends in the tar stream
        self._end = 0  # where the end-of-archive marker starts
        self._last: tuple[str, int] | None = None  # the last member listed, and its size
        self._scanned = False
        try:
            if self.format == "zip":
                self._members = self._list_zip()
            else:
                self._members = self._list_tar()
            self._check_names()
        except BaseException:
            self.close()
            raise

    @property
    def names(self) -> list[str]:
        return sorted(self._members)

    @property
    def folders(self) -> list[str]:
        """Every folder: listed as a member (possibly empty) or holding a file."""
        found = set(self._folders)
        for name in self._members:
            found.update(parent.as_posix() for parent in PurePosixPath(name).parents)
        found.discard(".")
        return sorted(found)

    def total_bytes(self) -> int:
        return sum(self._declared(name) for name in self._members)

    def read(self, name: str) -> bytes:
        """The member's bytes; MemberTooLarge, without reading it, when over the limit."""
        return b"".join(self._chunks(name))

    def expect_reads(self, names: Iterable[str]) -> None:
        """Say in which order members will be read, so a .tar.gz is read the cheapest way.

        Reads in that order take as many forward passes as the longest run of members the
        order asks for backwards (the greedy cover below); more than MAX_STREAMS and the
        archive is inflated into a temporary file once, at the first read.
        """
        if self.format != "tar.gz":
            return
        ends: list[int] = []  # where each pass would stand, sorted
        for name in names:
            member = self._members[name]
            if member.size > self._limits.max_member_bytes:
                continue  # never read
            at = bisect.bisect_right(ends, member.offset)
            if at:
                ends.pop(at - 1)
            bisect.insort(ends, member.offset + member.size)
        self._inflate_first = len(ends) > MAX_STREAMS

    def test_integrity(self) -> None:
        """Read every member once, so damage shows now, not halfway through prepare."""
        if self.format == "zip":
            for name in self.names:
                for _ in self._chunks(name, check_limit=False):
                    pass
        elif not self._scanned:
            with open(self.path, "rb") as handle:
                scan = _HeaderScan()
                stream = _Forward(handle, self._tar_budget(), self.path.name, scan=scan)
                try:
                    stream.skip_to(os.fstat(handle.fileno()).st_size)
                except OSError as err:
                    raise ArchiveError(f"{self.path.name} cannot be read: {err}") from None
                self._check_embedded(scan.found)

    def close(self) -> None:
        for handle in (self._zip, self._tar_file, self._inflated, *self._streams):
            if handle is not None:
                handle.close()
        self._streams = []

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Reading members.

    def _declared(self, name: str) -> int:
        member = self._members[name]
        return member.file_size if self.format == "zip" else member.size

    def _chunks(self, name: str, check_limit: bool = True) -> Iterator[bytes]:
        """The member's data in chunks, exactly as many bytes as declared, within the limits."""
        if name not in self._members:
            raise ArchiveError(f"{self.path.name} has no member {name!r}")
        declared = self._declared(name)
        limit = self._limits.max_member_bytes
        if check_limit and declared > limit:
            raise MemberTooLarge(
                f"{self.path.name}: member {name!r} is {_size(declared)}, more than "
                f"download.max_member_mb ({_size(limit)}); it is not read. Raise "
                "download.max_member_mb if it really is one image"
            )
        produced = 0
        try:
            source = self._zip_chunks(name) if self.format == "zip" else self._tar_chunks(name)
            for chunk in source:
                produced += len(chunk)
                self._read_total += len(chunk)
                if produced > declared or (check_limit and produced > limit):
                    break  # the library should stop at the declared size; never trust it
                if self._read_total > self._limits.max_total_bytes:
                    raise ArchiveError(
                        f"{self.path.name}: reading member {name!r} took the bytes read past "
                        f"{_size(self._limits.max_total_bytes)} (download.max_total_gb); "
                        "refusing it as a likely archive bomb"
                    )
                yield chunk
        except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError, zlib.error) as err:
            raise ArchiveError(
                f"{self.path.name}: member {name!r} cannot be read ({err}); the archive is "
                f"corrupt: {REPACK}"
            ) from None
        if produced != declared:
            raise ArchiveError(
                f"{self.path.name}: member {name!r} declares {declared} bytes but holds "
                f"{'more' if produced > declared else produced}; the archive is corrupt or "
                f"was made to mislead: {REPACK}"
            )

    def _zip_chunks(self, name: str) -> Iterator[bytes]:
        # zipfile checks the CRC when the declared size has been read.
        with self._zip.open(self._members[name]) as handle:
            while chunk := handle.read(CHUNK):
                yield chunk

    def _tar_chunks(self, name: str) -> Iterator[bytes]:
        member = self._members[name]
        if self.format == "tar":
            yield from _pread_chunks(self._tar_file, member, self.path.name)
            return
        if self._inflated is None and self._inflate_first:
            self._inflate()
        if self._inflated is not None:
            yield from _pread_chunks(self._inflated, member, self.path.name)
            return
        stream = self._stream_for(member.offset)
        if stream is None:
            self._inflate()
            yield from _pread_chunks(self._inflated, member, self.path.name)
            return
        stream.skip_to(member.offset)
        left = member.size
        while left > 0:
            chunk = stream.read(min(CHUNK, left))
            if not chunk:
                return  # short: _chunks names the member
            left -= len(chunk)
            yield chunk

    def _stream_for(self, offset: int) -> _Forward | None:
        """The pass standing nearest before ``offset``, a new one, or None when none may go."""
        behind = [s for s in self._streams if s.position <= offset]
        if behind:
            return max(behind, key=lambda s: s.position)
        if len(self._streams) >= MAX_STREAMS:
            return None
        stream = _Forward(_Gunzip(self.path), self._tar_end, self.path.name)
        self._streams.append(stream)
        return stream

    def _inflate(self) -> None:
        """Decompress the tar stream once into a private temporary file, space permitting."""
        folder = tempfile.gettempdir()
        free = shutil.disk_usage(folder).free
        if self._tar_end + TEMP_MARGIN > free:
            raise ArchiveError(
                f"{self.path.name}: reading its members in the order asked needs it inflated "
                f"into {folder} ({_size(self._tar_end)}), which has {_size(free)} free; set "
                "TMPDIR to a folder with more room, or repack the archive as .zip or .tar"
            )
        for stream in self._streams:
            stream.close()
        self._streams = []
        self._inflated = tempfile.TemporaryFile(prefix="imgpipe-archive-")  # noqa: SIM115
        stream = _Forward(_Gunzip(self.path), self._tar_end, self.path.name)
        with contextlib.closing(stream):
            while stream.position < self._tar_end:
                chunk = stream.read(min(CHUNK, self._tar_end - stream.position))
                if not chunk:
                    raise ArchiveError(f"{self.path.name} ended early; {REPACK}")
                self._inflated.write(chunk)
        self._inflated.flush()

    # Listing and checking.

    def _check_total(self, count: int, total: int) -> None:
        if count > self._limits.max_members:
            raise ArchiveError(
                f"{self.path.name} has more than {self._limits.max_members} members; "
                "refusing it as a likely archive bomb"
            )
        if total > self._limits.max_total_bytes:
            raise ArchiveError(
                f"{self.path.name} unpacks to more than {self._limits.max_total_bytes} bytes; "
                "refusing it as a likely archive bomb"
            )

    def _check_names(self) -> None:
        """A file whose name is also a folder would be lost to an extractor: refuse it."""
        for name in self.folders:
            if name in self._members:
                raise UnsafeArchive(
                    f"{self.path.name}: {name!r} is both a file and a folder in the archive"
                )

    def _list_zip(self) -> dict[str, zipfile.ZipInfo]:
        declared = _zip_entry_count(self.path)
        if declared is None:
            raise ArchiveError(
                f"{self.path.name} is not a complete zip archive (its end record is missing): "
                f"the file is truncated or corrupt; {REPACK}"
            )
        self._check_total(declared, 0)
        try:
            self._zip = zipfile.ZipFile(self.path)
            infos = self._zip.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as err:
            raise ArchiveError(
                f"{self.path.name} is a damaged zip archive ({err}); {REPACK}"
            ) from None
        if len(infos) != declared:
            raise ArchiveError(
                f"{self.path.name}: its end record counts {declared} members but its central "
                f"directory lists {len(infos)}; the archive is corrupt: {REPACK}"
            )
        members, total = {}, 0
        for count, info in enumerate(infos, start=1):
            name = check_member_name(info.filename, self.path.name)
            shown = _spelled(name, info.filename)
            mode = info.external_attr >> 16
            kind = stat.S_IFMT(mode)
            if info.is_dir():
                if kind not in (0, stat.S_IFDIR):
                    raise UnsafeArchive(f"{self.path.name}: member {shown} is not a folder")
                self._folders.add(name)
            elif kind == stat.S_IFLNK:
                raise UnsafeArchive(f"{self.path.name}: member {shown} is a symbolic link")
            elif kind not in (0, stat.S_IFREG):
                raise UnsafeArchive(
                    f"{self.path.name}: member {shown} is a device or other special file"
                )
            else:
                self._check_zip_member(info, name, shown, members)
                members[name] = info
                total += info.file_size
            self._check_total(count, total)
        self._check_zip_spans(infos)
        return members

    def _check_file_name(self, name: str, raw: str, seen: dict) -> None:
        """Refuse a file with no name, or a second file of the same (normalized) name."""
        if name == ".":
            raise UnsafeArchive(f"{self.path.name}: member {raw!r} has no file name")
        if name in seen:
            first = self._written.get(name, name)
            raise UnsafeArchive(
                f"{self.path.name}: members {first!r} and {raw!r} both name the file {name!r}; "
                "an extractor would keep only one of them"
            )
        if raw != name:
            self._written[name] = raw

    def _check_zip_member(self, info: zipfile.ZipInfo, name: str, shown: str, seen) -> None:
        self._check_file_name(name, info.filename, seen)
        if info.flag_bits & 0x1:
            raise ArchiveError(
                f"{self.path.name}: member {shown} is encrypted, and the pipeline reads no "
                "passwords; unpack the archive and pack it again without encryption"
            )
        if info.compress_type not in ZIP_METHODS:
            raise ArchiveError(
                f"{self.path.name}: member {shown} is compressed with method "
                f"{info.compress_type}, which cannot be read here (only "
                f"{', '.join(ZIP_METHODS.values())}); pack the archive again"
            )

    def _check_zip_spans(self, infos: list[zipfile.ZipInfo]) -> None:
        """Refuse entries whose bytes overlap: one compressed blob unpacked many times over.

        Each entry's local header and data, from the central directory's offset and
        compressed size, must end before the next entry begins and before the directory.
        """
        end_of_data = getattr(self._zip, "start_dir", None) or self.path.stat().st_size
        previous, reach = None, 0
        with open(self.path, "rb") as handle:
            for info in sorted(infos, key=lambda i: i.header_offset):
                shown = repr(info.filename)
                if info.header_offset < reach:
                    raise ArchiveError(
                        f"{self.path.name}: members {previous!r} and {shown} overlap (the "
                        f"first runs to byte {reach}, the second starts at byte "
                        f"{info.header_offset}): a zip made to unpack far more than it holds "
                        "(a zip bomb); refusing it"
                    )
                header = os.pread(handle.fileno(), 30, info.header_offset)
                if len(header) < 30 or header[:4] != b"PK\x03\x04":
                    raise ArchiveError(
                        f"{self.path.name}: member {shown} has no local header at byte "
                        f"{info.header_offset}; the archive is corrupt: {REPACK}"
                    )
                name_length, extra_length = struct.unpack("<HH", header[26:30])
                reach = info.header_offset + 30 + name_length + extra_length + info.compress_size
                previous = info.filename
        if reach > end_of_data:
            raise ArchiveError(
                f"{self.path.name}: member {previous!r} runs to byte {reach}, into the central "
                f"directory at byte {end_of_data}; the archive is corrupt or made to mislead: "
                f"{REPACK}"
            )

    def _tar_budget(self) -> int:
        # Headers and padding add at most a few blocks per member.
        return self._limits.max_total_bytes + 4 * BLOCK * self._limits.max_members + CHUNK

    def _list_tar(self) -> dict[str, _TarMember]:
        scan = _HeaderScan() if self.format == "tar.gz" else None
        if self.format == "tar":
            self._tar_file = open(self.path, "rb")  # noqa: SIM115
            raw: BinaryIO = open(self.path, "rb")  # noqa: SIM115
        else:
            raw = _Gunzip(self.path)
        stream = _Forward(
            raw, self._tar_budget(), self.path.name, scan, self.format == "tar", MAX_HEADER_BYTES
        )
        with contextlib.closing(stream):
            members = self._read_tar_headers(stream)
            self._check_tar_end(stream, members)
        if scan is not None:
            self._check_embedded(scan.found, members)
            self._scanned = True
        return members

    def _read_tar_headers(self, stream: _Forward) -> dict[str, _TarMember]:
        members: dict[str, _TarMember] = {}
        total = count = 0
        try:
            tar = tarfile.open(fileobj=stream, mode="r:")  # noqa: SIM115 (its file is ours)
            while (info := tar.next()) is not None:
                tar.members.clear()  # only what is kept below: 1M TarInfos would be 1 GB
                count += 1
                name = check_member_name(info.name, self.path.name)
                shown = _spelled(name, info.name)
                if info.issym() or info.islnk():
                    raise UnsafeArchive(f"{self.path.name}: member {shown} is a link")
                if info.isdev() or info.isfifo():
                    raise UnsafeArchive(
                        f"{self.path.name}: member {shown} is a device or other special file"
                    )
                if info.isfile():
                    if info.sparse is not None or info.type == tarfile.GNUTYPE_SPARSE:
                        raise ArchiveError(
                            f"{self.path.name}: member {shown} is a sparse file, which the "
                            "pipeline does not read; pack the archive again without --sparse"
                        )
                    self._check_file_name(name, info.name, members)
                    members[name] = _TarMember(info.offset_data, info.size)
                    total += info.size
                    self._tar_end = max(self._tar_end, info.offset_data + info.size)
                elif info.isdir():
                    self._folders.add(name)
                else:
                    raise UnsafeArchive(f"{self.path.name}: member {shown} has an unknown type")
                self._last = (name, info.size)
                self._check_total(count, total)
            self._end = tar.offset
        except tarfile.ReadError as err:
            if "zlib error" in str(err):  # read ahead: where in the listing tells nothing
                raise ArchiveError(
                    f"{self.path.name}: its compressed data is damaged ({err}); {REPACK}"
                ) from None
            if self._last is not None and "unexpected end of data" in str(err):
                raise ArchiveError(
                    f"{self.path.name} ends inside member {self._last[0]!r}: the file is "
                    f"truncated; {REPACK}"
                ) from None
            raise ArchiveError(
                f"{self.path.name} is not a readable tar archive {self._after()} ({err}); {REPACK}"
            ) from None
        except EOFError:
            raise ArchiveError(
                f"{self.path.name} stops short, {self._after()}: the file is truncated; {REPACK}"
            ) from None
        except (tarfile.TarError, OSError, zlib.error) as err:
            raise ArchiveError(
                f"{self.path.name} is corrupt {self._after()} ({err}); {REPACK}"
            ) from None
        return members

    def _check_tar_end(self, stream: _Forward, members: dict) -> None:
        """Only zero blocks may follow the last header: anything else is a lost member."""
        try:
            # tarfile has already read the block it stopped at; the rest is still to come.
            start, seen = stream.recent
            chunk = seen[self._end - start :] if start <= self._end < stream.position else b""
            stream.skip_to(max(self._end, stream.position))
            zeros = 0
            while True:
                if chunk.count(0) != len(chunk):
                    raise ArchiveError(
                        f"{self.path.name}: at byte {self._end}, {self._after()}, there is "
                        f"neither a tar header nor the end of the archive; {len(members)} "
                        "files were listed up to there. A wrong size field, damage, or "
                        f"several archives joined into one: {REPACK}"
                    )
                zeros += len(chunk)
                chunk = stream.read(CHUNK, limit=False)
                if not chunk:
                    break
        except EOFError:
            raise ArchiveError(
                f"{self.path.name}: its compressed stream stops short of its end: the file is "
                f"truncated; {REPACK}"
            ) from None
        except (OSError, zlib.error) as err:
            raise ArchiveError(
                f"{self.path.name} is corrupt near its end ({err}); {REPACK}"
            ) from None
        if zeros < BLOCK:
            raise ArchiveError(
                f"{self.path.name} ends without the end-of-archive marker, {self._after()}: the "
                f"file is truncated; {REPACK}"
            )

    def _after(self) -> str:
        if self._last is None:
            return "before any member"
        name, size = self._last
        return f"after member {name!r} (whose header declares {size} bytes)"

    def _check_embedded(self, found: list[int], members: dict | None = None) -> None:
        """A tar header inside a member's data: its size field hides the members after it."""
        members = self._members if members is None else members
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
                    f"{self.path.name}: member {name!r} declares {end - start} bytes, and a tar "
                    f"header sits inside them at byte {position}: its size field is too large "
                    f"and hides the members after it; {REPACK}"
                )


def _pread_chunks(handle: BinaryIO, member: _TarMember, archive: str) -> Iterator[bytes]:
    offset, end = member.offset, member.offset + member.size
    while offset < end:
        chunk = os.pread(handle.fileno(), min(CHUNK, end - offset), offset)
        if not chunk:
            return  # short: the caller names the member
        offset += len(chunk)
        yield chunk


class _Forward:
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
        scan: _HeaderScan | None = None,
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
                f"{'all the rest' if size is None or size < 0 else _size(size)} of data; "
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


class _Gunzip:
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


class _HeaderScan:
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


def _zip_entry_count(path: Path) -> int | None:
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


def copy_file(source: Path, target: Path) -> None:
    """Hard-link when possible (same filesystem, no extra space), else copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        target.hardlink_to(source)
    except OSError:
        shutil.copyfile(source, target)

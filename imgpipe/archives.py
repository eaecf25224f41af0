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
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from imgpipe.archive_rules import (
    CHUNK,
    REPACK,
    ArchiveError,
    Limits,
    MemberTooLarge,
    UnsafeArchive,
    archive_format,
    check_member_name,
    human_size,
    spelled_name,
)
from imgpipe.tar_stream import (
    BLOCK,
    ForwardReader,
    GunzipReader,
    HeaderScan,
    TarMember,
    check_embedded_headers,
    pread_chunks,
)
from imgpipe.zip_checks import check_zip_member, check_zip_spans, zip_entry_count

# Forward passes over a .tar.gz that a planned order of reads may take before the archive is
# inflated into a temporary file instead: a tree read class by class within split folders
# needs one per split folder; a shuffled archive needs one per read.
MAX_STREAMS = 4
# The largest single read tarfile may make while listing: a pax or long-name header's data.
# Real ones are a few hundred bytes; a hostile one could declare gigabytes.
MAX_HEADER_BYTES = 1 << 20
# Free space to leave in the temporary folder after inflating a .tar.gz there.
TEMP_MARGIN = 256 * 1024**2


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
        self._streams: list[ForwardReader] = []  # forward passes over a .tar.gz
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
                scan = HeaderScan()
                stream = ForwardReader(handle, self._tar_budget(), self.path.name, scan=scan)
                try:
                    stream.skip_to(os.fstat(handle.fileno()).st_size)
                except OSError as err:
                    raise ArchiveError(f"{self.path.name} cannot be read: {err}") from None
                check_embedded_headers(scan.found, self._members, self.path.name)

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
                f"{self.path.name}: member {name!r} is {human_size(declared)}, more than "
                f"download.max_member_mb ({human_size(limit)}); it is not read. Raise "
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
                        f"{human_size(self._limits.max_total_bytes)} (download.max_total_gb); "
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
            yield from pread_chunks(self._tar_file, member, self.path.name)
            return
        if self._inflated is None and self._inflate_first:
            self._inflate()
        if self._inflated is not None:
            yield from pread_chunks(self._inflated, member, self.path.name)
            return
        stream = self._stream_for(member.offset)
        if stream is None:
            self._inflate()
            yield from pread_chunks(self._inflated, member, self.path.name)
            return
        stream.skip_to(member.offset)
        left = member.size
        while left > 0:
            chunk = stream.read(min(CHUNK, left))
            if not chunk:
                return  # short: _chunks names the member
            left -= len(chunk)
            yield chunk

    def _stream_for(self, offset: int) -> ForwardReader | None:
        """The pass standing nearest before ``offset``, a new one, or None when none may go."""
        behind = [s for s in self._streams if s.position <= offset]
        if behind:
            return max(behind, key=lambda s: s.position)
        if len(self._streams) >= MAX_STREAMS:
            return None
        stream = ForwardReader(GunzipReader(self.path), self._tar_end, self.path.name)
        self._streams.append(stream)
        return stream

    def _inflate(self) -> None:
        """Decompress the tar stream once into a private temporary file, space permitting."""
        folder = tempfile.gettempdir()
        free = shutil.disk_usage(folder).free
        if self._tar_end + TEMP_MARGIN > free:
            raise ArchiveError(
                f"{self.path.name}: reading its members in the order asked needs it inflated "
                f"into {folder} ({human_size(self._tar_end)}), which has {human_size(free)} free; "
                "set TMPDIR to a folder with more room, or repack the archive as .zip or .tar"
            )
        for stream in self._streams:
            stream.close()
        self._streams = []
        self._inflated = tempfile.TemporaryFile(prefix="imgpipe-archive-")  # noqa: SIM115
        stream = ForwardReader(GunzipReader(self.path), self._tar_end, self.path.name)
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
        declared = zip_entry_count(self.path)
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
            shown = spelled_name(name, info.filename)
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
                self._check_file_name(name, info.filename, members)
                check_zip_member(info, shown, self.path.name)
                members[name] = info
                total += info.file_size
            self._check_total(count, total)
        check_zip_spans(self.path, self._zip, infos)
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

    def _tar_budget(self) -> int:
        # Headers and padding add at most a few blocks per member.
        return self._limits.max_total_bytes + 4 * BLOCK * self._limits.max_members + CHUNK

    def _list_tar(self) -> dict[str, TarMember]:
        scan = HeaderScan() if self.format == "tar.gz" else None
        if self.format == "tar":
            self._tar_file = open(self.path, "rb")  # noqa: SIM115
            raw: BinaryIO = open(self.path, "rb")  # noqa: SIM115
        else:
            raw = GunzipReader(self.path)
        stream = ForwardReader(
            raw, self._tar_budget(), self.path.name, scan, self.format == "tar", MAX_HEADER_BYTES
        )
        with contextlib.closing(stream):
            members = self._read_tar_headers(stream)
            self._check_tar_end(stream, members)
        if scan is not None:
            check_embedded_headers(scan.found, members, self.path.name)
            self._scanned = True
        return members

    def _read_tar_headers(self, stream: ForwardReader) -> dict[str, TarMember]:
        members: dict[str, TarMember] = {}
        total = count = 0
        try:
            tar = tarfile.open(fileobj=stream, mode="r:")  # noqa: SIM115 (its file is ours)
            while (info := tar.next()) is not None:
                tar.members.clear()  # only what is kept below: 1M TarInfos would be 1 GB
                count += 1
                name = check_member_name(info.name, self.path.name)
                shown = spelled_name(name, info.name)
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
                    members[name] = TarMember(info.offset_data, info.size)
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

    def _check_tar_end(self, stream: ForwardReader, members: dict) -> None:
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

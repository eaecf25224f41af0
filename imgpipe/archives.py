"""Reading .zip, .tar and .tar.gz archives member by member, refusing anything unsafe.

Archives are never extracted: members are read into memory one at a time, so nothing from
an archive is ever written to disk under a name it chose. The archive is still checked as a
whole before use, because a member that names ``../x``, ``/etc/x``, a link or a device file
means the archive was made to attack whoever extracts it, and its other members cannot be
trusted either. Limits on member count and total uncompressed size stop zip bombs; zip
members are CRC-checked as they are read, gzip streams as they are decompressed.
"""

from __future__ import annotations

import gzip
import shutil
import stat
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from imgpipe.errors import StageError

MAX_MEMBERS = 1_000_000
MAX_TOTAL_BYTES = 64 * 1024**3


class UnsafeArchive(StageError):
    """The archive holds a member that no honest image archive needs."""


class ArchiveError(StageError):
    """The archive is corrupt, unreadable or over a limit."""


@dataclass(frozen=True)
class Limits:
    max_members: int = MAX_MEMBERS
    max_total_bytes: int = MAX_TOTAL_BYTES


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
    """The member's path, or UnsafeArchive when it could land outside an extraction folder."""
    if "\\" in name or "\0" in name:
        raise UnsafeArchive(f"{archive}: member {name!r} has a backslash or NUL in its name")
    path = PurePosixPath(name)
    if path.is_absolute() or (path.parts and path.parts[0].endswith(":")):
        raise UnsafeArchive(f"{archive}: member {name!r} has an absolute path")
    if ".." in path.parts:
        raise UnsafeArchive(f"{archive}: member {name!r} climbs out of the archive with '..'")
    return path.as_posix()


class Archive:
    """A validated archive: ``names`` lists its regular files, ``read`` returns one's bytes."""

    def __init__(self, path: Path, limits: Limits = Limits()) -> None:
        self.path = Path(path)
        self.format = archive_format(self.path)
        self._limits = limits
        self._scratch = None
        self._folders: set[str] = set()
        if self.format == "zip":
            self._zip = zipfile.ZipFile(self.path)
            self._sizes = self._check_zip()
        else:
            self._tar = self._open_tar()
            self._sizes = self._check_tar()

    @property
    def names(self) -> list[str]:
        return sorted(self._sizes)

    @property
    def folders(self) -> list[str]:
        """Every folder: listed as a member (possibly empty) or holding a file."""
        found = set(self._folders)
        for name in self._sizes:
            found.update(parent.as_posix() for parent in PurePosixPath(name).parents)
        found.discard(".")
        return sorted(found)

    def total_bytes(self) -> int:
        return sum(self._sizes.values())

    def read(self, name: str) -> bytes:
        if name not in self._sizes:
            raise ArchiveError(f"{self.path.name} has no member {name!r}")
        try:
            if self.format == "zip":
                return self._zip.read(name)
            handle = self._tar.extractfile(self._tar_members[name])
            return handle.read()
        except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as err:
            raise ArchiveError(
                f"{self.path.name}: member {name!r} cannot be read ({err}); the archive is "
                "corrupt: delete it and download it again"
            ) from None

    def test_integrity(self) -> None:
        """Read every zip member once so a CRC error shows now, not halfway through prepare."""
        if self.format == "zip":
            try:
                bad = self._zip.testzip()
            except (zipfile.BadZipFile, OSError, EOFError) as err:
                bad = str(err)
            if bad is not None:
                raise ArchiveError(
                    f"{self.path.name}: member {bad!r} fails its CRC check; the archive is corrupt"
                )

    def close(self) -> None:
        if self.format == "zip":
            self._zip.close()
        else:
            self._tar.close()
        if self._scratch is not None:
            self._scratch.close()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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

    def _check_zip(self) -> dict[str, int]:
        sizes, total = {}, 0
        for count, info in enumerate(self._zip.infolist(), start=1):
            name = check_member_name(info.filename, self.path.name)
            mode = info.external_attr >> 16
            kind = stat.S_IFMT(mode)
            if info.is_dir():
                if kind not in (0, stat.S_IFDIR):
                    raise UnsafeArchive(f"{self.path.name}: member {name!r} is not a folder")
                self._folders.add(name)
            elif kind == stat.S_IFLNK:
                raise UnsafeArchive(f"{self.path.name}: member {name!r} is a symbolic link")
            elif kind not in (0, stat.S_IFREG):
                raise UnsafeArchive(
                    f"{self.path.name}: member {name!r} is a device or other special file"
                )
            else:
                sizes[name] = info.file_size
                total += info.file_size
            self._check_total(count, total)
        return sizes

    def _open_tar(self) -> tarfile.TarFile:
        try:
            if self.format == "tar":
                return tarfile.open(self.path, mode="r:")
            # Random access into a gzip stream re-decompresses from the start on every
            # backward seek, so decompress once into a private temporary file (bounded by
            # the size limit) and read members from that.
            self._scratch = tempfile.TemporaryFile(prefix="imgpipe-archive-")  # noqa: SIM115
            with gzip.open(self.path, "rb") as stream:
                self._copy_bounded(stream, self._scratch)
            self._scratch.seek(0)
            return tarfile.open(fileobj=self._scratch, mode="r:")
        except (tarfile.TarError, OSError, EOFError) as err:
            if self._scratch is not None:
                self._scratch.close()
            raise ArchiveError(f"{self.path.name} cannot be read as a tar archive: {err}") from None

    def _copy_bounded(self, source, target) -> None:
        # Tar headers and padding add at most ~2x for many tiny members; one extra limit's
        # worth of headroom still stops a bomb long before the disk fills.
        budget = 2 * self._limits.max_total_bytes + (1 << 20)
        copied = 0
        while chunk := source.read(1 << 20):
            copied += len(chunk)
            if copied > budget:
                raise ArchiveError(
                    f"{self.path.name} decompresses to more than {budget} bytes; "
                    "refusing it as a likely archive bomb"
                )
            target.write(chunk)

    def _check_tar(self) -> dict[str, int]:
        sizes, total = {}, 0
        self._tar_members = {}
        try:
            for count, info in enumerate(self._tar, start=1):
                name = check_member_name(info.name, self.path.name)
                if info.issym() or info.islnk():
                    raise UnsafeArchive(f"{self.path.name}: member {name!r} is a link")
                if info.isdev() or info.isfifo():
                    raise UnsafeArchive(
                        f"{self.path.name}: member {name!r} is a device or other special file"
                    )
                if info.isfile():
                    sizes[name] = info.size
                    self._tar_members[name] = info
                    total += info.size
                elif info.isdir():
                    self._folders.add(name)
                else:
                    raise UnsafeArchive(f"{self.path.name}: member {name!r} has an unknown type")
                self._check_total(count, total)
        except tarfile.TarError as err:
            raise ArchiveError(f"{self.path.name} is corrupt: {err}") from None
        return sizes


def copy_file(source: Path, target: Path) -> None:
    """Hard-link when possible (same filesystem, no extra space), else copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        target.hardlink_to(source)
    except OSError:
        shutil.copyfile(source, target)

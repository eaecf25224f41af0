"""What an archive must be to be read: its format, safe member names, the limits on its size,
and the errors that refuse it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from imgpipe.errors import StageError

MAX_MEMBERS = 1_000_000
MAX_TOTAL_BYTES = 64 * 1024**3
# Well above any real image (a 100-megapixel 16-bit TIFF is 600 MB uncompressed, as a JPEG
# tens of MB), well below what would strain memory: one member is held whole while read.
MAX_MEMBER_BYTES = 256 * 1024**2
CHUNK = 1 << 20
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


def human_size(count: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"


def spelled_name(name: str, raw: str) -> str:
    return repr(name) if name == raw else f"{name!r} (written {raw!r})"

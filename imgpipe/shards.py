"""Images packed into tar shards, with a manifest giving every sample's place.

DVC's cost grows with the number of files it tracks, so thousands of images live in a few tar
files. Tar keeps them readable with standard tools (``tar tf shard-00000.tar``), and the
manifest records each member's byte offset and length, so a reader (Python or tf.data) can
slice an image out of a shard without walking the archive. Every tar header field is fixed,
so the same images give the same bytes on every run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pandas as pd

from imgpipe.errors import MissingInputError

MANIFEST = "manifest.csv"
INFO_FILE = "info.json"  # beside a prepared manifest: the image standard and the classes
SHARD_PATTERN = "shard-{:05d}.tar"

# The manifest columns, in file order. Both manifests start with a sample's id, its label and
# its place in the shards (what ``ShardWriter.add`` returns and every reader needs).
PLACE_COLUMNS = ["id", "label", "shard", "offset", "length"]
# data/prepared: ``origin`` is the image's path in data/raw, ``sha256`` the hash of its
# standardized pixels, ``group`` the duplicate group that the split keeps on one side, ``phash``
# the perceptual fingerprint (imgpipe.near_duplicates) that finds near copies.
PHASH = "phash"
PREPARED_COLUMNS = [*PLACE_COLUMNS, "origin", "sha256", "group", PHASH]
SOURCE_SPLIT = "source_split"  # a prepared column only when the source has its own split
SOURCE_GROUP = "source_group"  # after it, only when the source names groups (a table's column)
# data/augmented: ``parent`` is the id of the prepared image a sample was made from; ``seed``
# and ``operations`` (JSON) are enough to make the sample again.
AUGMENTED_COLUMNS = [*PLACE_COLUMNS, "parent", "seed", "operations"]
# Read as text whatever they hold: hex ids and groups, or a class named 7, look like numbers.
TEXT_COLUMNS = ("id", "label", "origin", "group", PHASH, "parent", SOURCE_GROUP)


@dataclass(frozen=True)
class PackedImage:
    id: str
    data: bytes
    extension: str = "png"


BLOCK = 512  # tar's block: every header and every member's padded data
RECORD = 20 * BLOCK  # tar's default record: the archive's length is a multiple of it
USTAR_MAGIC = b"ustar\x0000"


def _octal(value: int, width: int) -> bytes:
    """A tar number field as ``tarfile`` writes it: zero-padded octal and a NUL."""
    return b"%0*o\x00" % (width - 1, value)


def member_header(name: str, size: int) -> bytes:
    """The USTAR header ``tarfile`` writes for a regular file of mode 644 with mtime 0.

    Written directly: through ``tarfile`` the header took about 30 us per image, a tenth of
    prepare's time per image once decoding is all that is left. ``tests/imgpipe/test_shards``
    checks the bytes against ``tarfile``'s.
    """
    encoded = name.encode("utf-8")
    if len(encoded) > 100:
        raise ValueError(f"member name {name!r} is longer than a tar header's 100 bytes")
    size_field = _octal(size, 12)
    # The checksum is the sum of the header's bytes: the fixed fields' part is summed once.
    checksum = b"%06o\x00" % (_FIXED_SUM + sum(encoded) + sum(size_field))
    return b"".join((encoded.ljust(100, b"\x00"), _MODE_IDS, size_field, _MTIME, checksum, _TAIL))


_MODE_IDS = _octal(0o644, 8) + _octal(0, 8) + _octal(0, 8)  # mode, uid, gid
_MTIME = _octal(0, 12)
# After the checksum's 7 bytes: its trailing space, "0" (a regular file), an empty linkname,
# the magic, empty uname, gname, devmajor, devminor (empty for anything but a device), prefix.
_TAIL = b" 0" + bytes(100) + USTAR_MAGIC + bytes(64) + bytes(16) + bytes(167)
_FIXED_SUM = sum(_MODE_IDS) + sum(_MTIME) + sum(b" " * 8) + sum(_TAIL[2:]) + ord("0")


class ShardWriter:
    """Writes images into consecutive shards of at most ``shard_size`` images.

    The bytes are those of ``tarfile`` in USTAR format with every header field fixed, so the
    same images give the same shards on every run.
    """

    def __init__(self, directory: Path, shard_size: int) -> None:
        self.directory = Path(directory)
        self.shard_size = shard_size
        self._file: BinaryIO | None = None
        self._shard_index = -1
        self._in_shard = 0
        self._offset = 0

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, image: PackedImage) -> dict[str, object]:
        """Store one image; return its shard, offset and length for the manifest."""
        if self._file is None or self._in_shard >= self.shard_size:
            self._open_next()
        assert self._file is not None
        size = len(image.data)
        padding = -size % BLOCK
        self._file.write(member_header(f"{image.id}.{image.extension}", size))
        self._file.write(image.data)
        if padding:
            self._file.write(bytes(padding))
        place = {
            "shard": SHARD_PATTERN.format(self._shard_index),
            "offset": self._offset + BLOCK,
            "length": size,
        }
        self._offset += BLOCK + size + padding
        self._in_shard += 1
        return place

    def _open_next(self) -> None:
        self.close()
        self._shard_index += 1
        self._in_shard = 0
        self._offset = 0
        path = self.directory / SHARD_PATTERN.format(self._shard_index)
        # Held open across add() calls and closed in close(); a with-block cannot span them.
        self._file = open(path, "wb")  # noqa: SIM115

    def close(self) -> None:
        if self._file is not None:
            # The end-of-archive marker (two zero blocks), then zeros up to a whole record.
            end = self._offset + 2 * BLOCK
            self._file.write(bytes(2 * BLOCK + (-end % RECORD)))
            self._file.close()
            self._file = None


def write_manifest(directory: Path, rows: Iterable[dict[str, object]], columns: list[str]) -> Path:
    frame = pd.DataFrame(list(rows), columns=columns)
    path = Path(directory) / MANIFEST
    frame.to_csv(path, index=False, lineterminator="\n")
    return path


def read_info(prepared_dir: Path | str) -> dict:
    """``info.json`` of data/prepared: the image standard and the class names, in order."""
    path = Path(prepared_dir) / INFO_FILE
    if not path.exists():
        raise MissingInputError(f"{path} is missing: run the prepare stage first")
    return json.loads(path.read_text(encoding="utf-8"))


def read_manifest(directory: Path | str) -> pd.DataFrame:
    path = Path(directory) / MANIFEST
    if not path.exists():
        raise MissingInputError(f"{path} is missing: run the stage that writes it (dvc repro)")
    return pd.read_csv(path, dtype=dict.fromkeys(TEXT_COLUMNS, str), keep_default_na=False)


def read_split(split_dir: Path | str, name: str) -> pd.DataFrame:
    path = Path(split_dir) / f"{name}.csv"
    if not path.exists():
        raise MissingInputError(f"{path} is missing: run the split stage first (dvc repro split)")
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def split_rows(manifest: pd.DataFrame, split_dir: Path | str, name: str) -> pd.DataFrame:
    """The manifest rows that the split ``name`` names."""
    return manifest[manifest["id"].isin(read_split(split_dir, name)["id"])]


def read_images(directory: Path | str, rows: pd.DataFrame) -> Iterator[tuple[str, bytes]]:
    """Yield (id, encoded bytes) for ``rows``, opening each shard once."""
    directory = Path(directory)
    for shard, group in rows.groupby("shard", sort=False):
        with open(directory / str(shard), "rb") as handle:
            for row in group.itertuples(index=False):
                handle.seek(int(row.offset))
                yield str(row.id), handle.read(int(row.length))

"""Images packed into tar shards, with a manifest giving every sample's place.

DVC's cost grows with the number of files it tracks, so thousands of images live in a few tar
files. Tar keeps them readable with standard tools (``tar tf shard-00000.tar``), and the
manifest records each member's byte offset and length, so a reader (Python or tf.data) can
slice an image out of a shard without walking the archive. Every tar header field is fixed,
so the same images give the same bytes on every run.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

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


class ShardWriter:
    """Writes images into consecutive shards of at most ``shard_size`` images."""

    def __init__(self, directory: Path, shard_size: int) -> None:
        self.directory = Path(directory)
        self.shard_size = shard_size
        self._tar: tarfile.TarFile | None = None
        self._shard_index = -1
        self._in_shard = 0

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, image: PackedImage) -> dict[str, object]:
        """Store one image; return its shard, offset and length for the manifest."""
        if self._tar is None or self._in_shard >= self.shard_size:
            self._open_next()
        assert self._tar is not None
        info = tarfile.TarInfo(f"{image.id}.{image.extension}")
        info.size = len(image.data)
        info.mtime = 0
        info.mode = 0o644
        self._tar.addfile(info, io.BytesIO(image.data))
        self._in_shard += 1
        # The archive's write position now sits after the member's data, padded to a block.
        padded = -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
        return {
            "shard": SHARD_PATTERN.format(self._shard_index),
            "offset": self._tar.offset - padded,
            "length": info.size,
        }

    def _open_next(self) -> None:
        self.close()
        self._shard_index += 1
        self._in_shard = 0
        path = self.directory / SHARD_PATTERN.format(self._shard_index)
        # Held open across add() calls and closed in close(); a with-block cannot span them.
        self._tar = tarfile.open(path, "w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tar = None


def write_manifest(directory: Path, rows: Iterable[dict[str, object]], columns: list[str]) -> Path:
    frame = pd.DataFrame(list(rows), columns=columns)
    path = Path(directory) / MANIFEST
    frame.to_csv(path, index=False, lineterminator="\n")
    return path


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

"""CIFAR-10 from its official URL (or a mirror), checked against its sha256 and read straight
from its archive, python or binary version, without trusting pickle.

The python batches are pickles, and unpickling runs whatever code the file names. They are
read with an unpickler that can build nothing but numpy arrays, lists, dicts, numbers and
strings, so a tampered file fails to load instead of running code. Each image is stored as
3x32x32, channel first (1024 red, 1024 green, 1024 blue values, row-major); it is returned as
32x32x3 without changing a pixel, as a lossless PNG. The source's own test batch stays marked
as ``test``.
"""

from __future__ import annotations

import io
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from pydantic import Field

from imgpipe.archives import Archive
from imgpipe.errors import RawDataError
from imgpipe.raw import RawItem
from imgpipe.redact import redact_url
from imgpipe.sources.common import (
    ArchiveSourceParams,
    Sha256,
    Source,
    download_url,
    keep_archive,
    limits,
    limits_record,
    open_archive,
)

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
SIDE = 32
PIXELS = 3 * SIDE * SIDE
TEST_BATCH = "test_batch"
PYTHON_BATCH = re.compile(r"^(?:.*/)?(data_batch_[1-5]|test_batch)$")
BINARY_BATCH = re.compile(r"^(?:.*/)?(data_batch_[1-5]|test_batch)\.bin$")


class CifarError(RawDataError):
    """The archive is not CIFAR-10 in either of its published layouts."""


@dataclass(frozen=True)
class Batch:
    name: str  # data_batch_1 .. data_batch_5, test_batch
    labels: np.ndarray  # (N,) int64 class indices
    images: np.ndarray  # (N, 32, 32, 3) uint8, height x width x channel

    @property
    def split(self) -> str | None:
        """The source's own split: CIFAR-10 publishes its test batch separately."""
        return "test" if self.name == TEST_BATCH else None


def _numpy_multiarray(name: str):
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    return getattr(multiarray, name)


class RestrictedUnpickler(pickle.Unpickler):
    """Builds numpy arrays and scalars and plain containers; refuses every other global."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("_codecs", "encode"):
            import codecs

            return codecs.encode
        # An array is rebuilt by _reconstruct, a numpy number (a label in a list) by scalar.
        if name in ("_reconstruct", "scalar") and module in (
            "numpy.core.multiarray",
            "numpy._core.multiarray",
        ):
            return _numpy_multiarray(name)
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")


def load_python_batch(data: bytes, name: str, where: str | None = None) -> Batch:
    """The batch in ``data`` (a python-version pickle); ``where`` names its file in messages."""
    where = where or name
    try:
        raw = RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as err:  # any way a hostile pickle fails is the same answer
        raise CifarError(f"CIFAR batch {where} cannot be read safely: {err}") from None
    if not isinstance(raw, dict):
        raise CifarError(f"CIFAR batch {where} is not a dict")
    pixels = raw.get(b"data", raw.get("data"))
    labels = raw.get(b"labels", raw.get("labels"))
    if pixels is None or labels is None:
        raise CifarError(f"CIFAR batch {where} lacks 'data' or 'labels'")
    return _batch(name, where, labels, pixels)


def load_binary_batch(data: bytes, name: str, where: str | None = None) -> Batch:
    where = where or name
    if len(data) % (PIXELS + 1):
        raise CifarError(f"CIFAR batch {where} is {len(data)} bytes, not whole 3073-byte records")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, PIXELS + 1)
    return _batch(name, where, records[:, 0], records[:, 1:])


def _batch(name: str, where: str, labels: object, pixels: object) -> Batch:
    if (
        not isinstance(pixels, np.ndarray)
        or pixels.dtype != np.uint8
        or pixels.ndim != 2
        or pixels.shape[1] != PIXELS
    ):
        found = (
            f"{pixels.dtype} {pixels.shape}"
            if isinstance(pixels, np.ndarray)
            else type(pixels).__name__
        )
        raise CifarError(
            f"CIFAR batch {where}: data is {found}, expected uint8 (N, {PIXELS}) numpy array"
        )
    images = pixels.reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1)
    return Batch(name, class_numbers(labels, len(pixels), where), np.ascontiguousarray(images))


def class_numbers(labels: object, count: int, where: str) -> np.ndarray:
    """``labels`` as ``count`` class numbers in 0..9, or a CifarError naming the first bad one.

    The restricted unpickler gives a list of Python or numpy ints, or a numpy array; a bool,
    float, bytes or anything else is refused rather than converted, since converting would
    quietly turn 1.9 into class 1 or a bytes string into its character codes.
    """
    what = f"CIFAR batch {where}: labels"
    classes = len(CLASSES)
    if isinstance(labels, np.ndarray):
        if labels.ndim != 1:
            raise CifarError(f"{what} are an array of shape {labels.shape}, not one per image")
        if not np.issubdtype(labels.dtype, np.integer):
            first = f" (labels[0] is {_shown(labels[0])})" if len(labels) else ""
            raise CifarError(f"{what} are a {labels.dtype} array, not integers{first}")
        outside = np.flatnonzero((labels < 0) | (labels >= classes))
        bad = int(outside[0]) if outside.size else None
    elif isinstance(labels, list | tuple):
        bad = None
        for index, label in enumerate(labels):
            if not isinstance(label, int | np.integer) or isinstance(label, bool):
                raise CifarError(
                    f"{what}[{index}] is {_shown(label)} ({type(label).__name__}), not an "
                    f"integer: labels must be class numbers in 0..{classes - 1}"
                )
            if bad is None and not 0 <= label < classes:
                bad = index
    else:
        raise CifarError(
            f"{what} are {type(labels).__name__} ({_shown(labels)}), not a list of class "
            f"numbers in 0..{classes - 1}"
        )
    if len(labels) != count:
        raise CifarError(f"{what}: {len(labels)} labels for {count} images")
    if bad is not None:
        raise CifarError(
            f"{what}[{bad}] is {_shown(labels[bad])}, outside 0..{classes - 1}: labels must "
            f"be class numbers in 0..{classes - 1}"
        )
    return np.asarray(labels, dtype=np.int64)


def _shown(value: object) -> str:
    text = repr(value.item() if isinstance(value, np.generic) else value)
    return text if len(text) <= 40 else text[:37] + "..."


def batch_members(archive: Archive) -> list[tuple[str, str, bool]]:
    """(member, batch name, is_binary) for every batch, train batches first."""
    found = []
    for member in archive.names:
        for pattern, binary in ((PYTHON_BATCH, False), (BINARY_BATCH, True)):
            match = pattern.match(member)
            if match:
                found.append((member, match.group(1), binary))
    names = [name for _, name, _ in found]
    if TEST_BATCH not in names or not any(n.startswith("data_batch_") for n in names):
        raise CifarError(
            f"{archive.path.name} has no CIFAR-10 data_batch_N and test_batch members; "
            "download.url must point at cifar-10-python.tar.gz or cifar-10-binary.tar.gz"
        )
    if len(set(names)) != len(names):
        raise CifarError(f"{archive.path.name} holds the same CIFAR batch twice")
    return sorted(found, key=lambda entry: (entry[1] == TEST_BATCH, entry[1]))


def read_batches(archive: Archive) -> list[Batch]:
    batches = []
    members = batch_members(archive)
    archive.expect_reads(member for member, _, _ in members)
    for member, name, binary in members:
        data = archive.read(member)
        where = f"{archive.path.name}/{member}"
        load = load_binary_batch if binary else load_python_batch
        batches.append(load(data, name, where))
    return batches


class Cifar10Params(ArchiveSourceParams):
    source: Literal["cifar10"] = "cifar10"
    url: str = Field(URL, description="where to download from: the official URL or a mirror")
    sha256: Sha256 = Field(SHA256, description="expected sha256 of the downloaded file")


def fetch(params: Cifar10Params, out_dir: Path, downloads_dir: Path) -> dict[str, object]:
    fetched = download_url(params, params.url, params.sha256, downloads_dir, "cifar-10.tar.gz")
    archive_limits = limits(params)
    with Archive(fetched.path, archive_limits) as archive:
        batches = read_batches(archive)
    keep_archive(fetched, out_dir, fetched.path.name)
    splits: dict[str, int] = {}
    for batch in batches:
        split = batch.split or "train"
        splits[split] = splits.get(split, 0) + len(batch.labels)
    return {
        "kind": "cifar10",
        "url": redact_url(params.url),
        "path": None,
        "sha256": fetched.sha256,
        "bytes": fetched.size,
        "size": sum(splits.values()),
        "class_names": list(CLASSES),
        "layout": "cifar10",
        "archive": fetched.path.name,
        "batches": [batch.name for batch in batches],
        # The source's own split: items of its test batch carry split="test".
        "splits": splits,
        "limits": limits_record(archive_limits),
    }


def list_items(raw_dir: Path, source: dict) -> list[RawItem]:
    """Every image of every batch, its pixels returned as PNG bytes when read."""
    with open_archive(raw_dir, source) as archive:
        batches = read_batches(archive)
    names = source.get("class_names") or CLASSES
    items = []
    for batch in batches:
        for index, label in enumerate(batch.labels):
            items.append(
                RawItem(
                    origin=f"{source['archive']}/{batch.name}/{index:05d}",
                    label=names[label],
                    read=_pixel_reader(batch, index),
                    split=batch.split,
                )
            )
    return items


def _pixel_reader(batch: Batch, index: int) -> Callable[[], bytes]:
    def read() -> bytes:
        # PNG is lossless, so prepare decodes exactly the published pixels.
        buffer = io.BytesIO()
        Image.fromarray(batch.images[index]).save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()

    return read


SOURCE = Source("cifar10", Cifar10Params, fetch, list_items)

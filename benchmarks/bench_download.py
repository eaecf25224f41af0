"""download and the raw reader: what keeping sources as they are costs, against copying.

- Reading every member of a .tar.gz in class order (the order ``prepare`` asks for), through
  ``imgpipe.raw`` (the members are stored shuffled, so the gzip stream is listed once, then
  decompressed once into a temporary file for random access), against
  ``tarfile.open(mode="r:gz")`` and ``extractfile`` in the same order, where each backward
  seek decompresses the stream again from its start.
- Taking in a local folder: ours lists it with each file's sha256 and copies nothing; the
  plain way copies the folder into ``data/raw`` (which DVC then hashes and caches once more).
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.corpus import make_corpus
from benchmarks.harness import Comparison, median, median_rates
from imgpipe.raw import list_items


def _shuffled_tar_gz(corpus: Path, target: Path, seed: int = 0) -> None:
    # Real archives are rarely stored in class order; shuffle so reads must seek both ways.
    files = sorted(p for p in corpus.rglob("*.jpg"))
    order = np.random.default_rng(seed).permutation(len(files))
    with tarfile.open(target, "w:gz") as archive:
        for index in order:
            path = files[index]
            info = tarfile.TarInfo(path.relative_to(corpus).as_posix())
            data = path.read_bytes()
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def _read_with_raw(raw: Path) -> int:
    items, _ = list_items(raw)
    return sum(len(item.read()) for item in items)


def _read_with_tarfile(path: Path) -> int:
    with tarfile.open(path, "r:gz") as archive:
        members = [m for m in archive.getmembers() if m.isfile()]
        members.sort(key=lambda m: (m.name.split("/")[0], m.name))
        return sum(len(archive.extractfile(m).read()) for m in members)


def _archive_row(work: Path, count: int, repeats: int) -> Comparison:
    corpus = make_corpus(work / "corpus", count, seed=5)
    raw = work / "raw"
    raw.mkdir()
    _shuffled_tar_gz(corpus, raw / "pets.tar.gz")
    (raw / "source.json").write_text(
        json.dumps({"kind": "archive", "layout": "archive", "archive": "pets.tar.gz", "labels": {}})
    )
    assert _read_with_raw(raw) == _read_with_tarfile(raw / "pets.tar.gz")
    rates = median_rates(
        {
            "ours": lambda: _read_with_raw(raw),
            "plain": lambda: _read_with_tarfile(raw / "pets.tar.gz"),
        },
        count,
        repeats,
    )
    return Comparison(
        stage="prepare (raw reader)",
        what=f"read {count} .tar.gz members in class order",
        unit="img/s",
        ours=median(rates["ours"]),
        plain=median(rates["plain"]),
        plain_name="tarfile r:gz + extractfile",
        samples=rates,
    )


def _folder_row(work: Path, count: int, repeats: int) -> Comparison:
    from imgpipe.layout import Layout
    from imgpipe.params import parse_params
    from stages import download

    corpus = make_corpus(work / "folder", count, seed=6)
    params = parse_params({"download": {"source": "folder", "path": str(corpus)}}).download
    layout = replace(Layout.under(work / "ours"), raw=work / "ours" / "raw")

    def ours() -> None:
        download.run(params, layout)

    def plain() -> None:
        target = work / "plain" / "raw"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(corpus, target / "images")

    rates = median_rates({"ours": ours, "plain": plain}, count, repeats)
    return Comparison(
        stage="download (folder)",
        what=f"take in a folder of {count} JPEGs",
        unit="img/s",
        ours=median(rates["ours"]),
        plain=median(rates["plain"]),
        plain_name="copy into data/raw",
        samples=rates,
    )


def run(scale: float = 1.0, repeats: int = 3) -> list[Comparison]:
    with tempfile.TemporaryDirectory(prefix="bench-download-") as tmp:
        work = Path(tmp)
        archive_count = max(4, int(300 * scale))
        folder_count = max(4, int(2000 * scale))
        (work / "a").mkdir()
        (work / "f").mkdir()
        return [
            _archive_row(work / "a", archive_count, repeats),
            _folder_row(work / "f", folder_count, repeats),
        ]

"""A table of image paths and labels (CSV or Parquet, local or from a URL with its sha256).

The table is kept in data/raw as fetched; the images it names are read in place, like a local
folder's, and listed in ``files.csv`` with each file's sha256, so a file changed after the
listing is refused by ``prepare``. Paths in the table are relative to ``download.root`` when
it is set, else to the table's own folder; absolute paths are taken as they are.

Optional columns: a group column (images of one group, such as one patient or one recording,
stay in one split, as duplicates do) and a split column (``train`` / ``val`` / ``test``: the
source's own split, kept with ``split.keep_source_test`` / ``keep_source_val`` as for a
``test/`` folder). Nothing is dropped silently: a row without a path or label, a missing or
unreadable file, a split value that is not a split, or a path listed again are each kept out
of the listing and recorded under ``skipped`` in ``source.json`` with the row number (the
header is row 1, as a spreadsheet counts) and the reason, which ``prepare`` reports.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import Field, model_validator
from tqdm import tqdm

from imgpipe.cli import worker_count
from imgpipe.errors import RawDataError, StageError
from imgpipe.fetch_errors import ChecksumMismatch
from imgpipe.file_hash import Fetched, file_sha256
from imgpipe.layout import local_path
from imgpipe.raw import RawItem
from imgpipe.redact import redact_url
from imgpipe.sources.common import Sha256, Source, SourceParams, copy_hashed, download_url
from imgpipe.sources.folder import read_listing, verified_reader, write_listing

LISTING_FILE = "files.csv"
SPLITS = ("train", "val", "test")
# files.csv: the folder source's columns, then the optional ones the table has.
LISTING_COLUMNS = ["path", "label", "size", "sha256"]
SPLIT_COLUMN = "split"
GROUP_COLUMN = "group"
FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
FIRST_DATA_ROW = 2  # row numbers as a spreadsheet shows them: the header is row 1


class TableParams(SourceParams):
    source: Literal["table"] = "table"
    path: str | None = Field(None, description="a local .csv or .parquet table")
    url: str | None = Field(None, description="where to download the table from")
    sha256: Sha256 | None = Field(None, description="the table's checksum; required with url")
    root: str | None = Field(
        None, description="folder the table's image paths are relative to; default its folder"
    )
    path_column: str = Field("path", min_length=1)
    label_column: str = Field("label", min_length=1)
    group_column: str | None = Field(
        "group", description="images sharing a value stay in one split; used if present"
    )
    split_column: str | None = Field(
        "split", description="train / val / test per image, the source's own; used if present"
    )

    @model_validator(mode="after")
    def _where_from(self) -> TableParams:
        if bool(self.url) == bool(self.path):
            raise ValueError("source 'table' needs exactly one of download.url, download.path")
        if self.url and not self.sha256:
            raise ValueError("a table from download.url needs download.sha256 (`sha256sum FILE`)")
        if self.url and not self.root:
            raise ValueError(
                "a table from download.url needs download.root: the folder its image paths "
                "are relative to"
            )
        return self


def _table_format(name: str) -> str:
    kind = FORMATS.get(Path(name).suffix.lower())
    if kind is None:
        raise StageError(
            f"download: the table {name!r} is neither .csv nor .parquet; save it as one of "
            "those (pandas: DataFrame.to_csv or to_parquet)"
        )
    return kind


def _kept_table(params: TableParams, out_dir: Path, downloads: Path) -> Fetched:
    """The verified table, copied into data/raw (small: its images stay where they are)."""
    if params.url:
        fetched = download_url(params, params.url, params.sha256, downloads, "table.csv")
        _table_format(fetched.path.name)
        return copy_hashed(fetched.path, out_dir / fetched.path.name)
    path = local_path(params.path).resolve()
    if not path.is_file():
        raise StageError(
            f"download.path {str(path)!r} is not a file: point it at a .csv or .parquet table "
            "with a path and a label column"
        )
    _table_format(path.name)
    kept = copy_hashed(path, out_dir / path.name)
    if params.sha256 and kept.sha256 != params.sha256:
        kept.path.unlink()
        raise ChecksumMismatch(
            f"{path}: sha256 is {kept.sha256}, expected {params.sha256}; check download.path "
            "and download.sha256 in params.yaml"
        )
    return kept


def read_table(path: Path) -> pd.DataFrame:
    """Every cell as text (a label 6 stays '6', an empty cell ''), in the table's row order."""
    try:
        if _table_format(path.name) == "parquet":
            table = pd.read_parquet(path)
            return table.astype(object).where(table.notna(), "").astype(str)
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, OSError, pd.errors.ParserError) as err:
        raise StageError(f"download: the table {path.name} cannot be read: {err}") from None


def _columns(params: TableParams, table: pd.DataFrame) -> dict[str, str]:
    """listing column -> table column, for the columns this table has."""
    present = list(table.columns)
    missing = [c for c in (params.path_column, params.label_column) if c not in present]
    if missing:
        raise StageError(
            f"download: the table has no column {', '.join(map(repr, missing))}; its columns are "
            f"{present}. Set download.path_column and download.label_column to the right names"
        )
    chosen = {"path": params.path_column, "label": params.label_column}
    if params.split_column and params.split_column in present:
        chosen[SPLIT_COLUMN] = params.split_column
    if params.group_column and params.group_column in present:
        chosen[GROUP_COLUMN] = params.group_column
    return chosen


def _image_root(params: TableParams, table_path: str | None) -> tuple[Path, str]:
    """The folder image paths are relative to, and how source.json records it (as written)."""
    written = params.root if params.root else Path(table_path or ".").parent.as_posix()
    root = local_path(written).resolve()
    if not root.is_dir():
        raise StageError(
            f"download.root {str(root)!r} is not a folder; point it at the folder the table's "
            "image paths are relative to"
        )
    return root, written


def _row_problem(row: dict[str, str], seen: dict[str, int], number: int) -> str | None:
    if not row["path"].strip():
        return "no path"
    if not row["label"].strip():
        return "no label"
    if SPLIT_COLUMN in row and row[SPLIT_COLUMN] not in ("", *SPLITS):
        return f"split {row[SPLIT_COLUMN]!r} is none of {', '.join(SPLITS)}"
    if row["path"] in seen:
        return f"the same path as row {seen[row['path']]}, which is kept"
    return None


def _hash(path: Path) -> tuple[str, int] | str:
    if not path.exists():
        return "missing" if not path.is_symlink() else "broken symbolic link"
    if not path.is_file():
        return "not a regular file"
    try:
        return file_sha256(path), path.stat().st_size
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"


def _listing(
    table: pd.DataFrame, chosen: dict[str, str], root: Path
) -> tuple[list[dict], list[dict]]:
    """(rows of files.csv, skipped rows with their reasons), in the table's order."""
    rows, skipped, seen = [], [], {}
    for number, record in enumerate(table[list(chosen.values())].itertuples(index=False)):
        row = dict(zip(chosen, (str(value) for value in record), strict=True))
        number += FIRST_DATA_ROW
        problem = _row_problem(row, seen, number)
        if problem:
            skipped.append({"row": number, "path": row["path"], "reason": problem})
            continue
        seen[row["path"]] = number
        rows.append({**row, "row": number})
    with ThreadPoolExecutor(worker_count(0) * 2) as pool:
        hashes = pool.map(_hash, (root / row["path"] for row in rows))
        listed = []
        for row, hashed in tqdm(
            zip(rows, hashes, strict=True), total=len(rows), desc="hash", unit="file"
        ):
            if isinstance(hashed, str):
                skipped.append({"row": row["row"], "path": row["path"], "reason": hashed})
            else:
                listed.append({**row, "sha256": hashed[0], "size": hashed[1]})
    skipped.sort(key=lambda entry: entry["row"])
    return listed, skipped


def _conflicting_labels(table: pd.DataFrame, chosen: dict[str, str]) -> list[dict]:
    """Paths listed more than once with different labels: worth a person's look."""
    labelled = table[table[chosen["label"]].str.strip() != ""]
    labels = labelled.groupby(chosen["path"])[chosen["label"]].unique()
    return [
        {"path": path, "labels": sorted(map(str, found))}
        for path, found in labels.items()
        if len(found) > 1
    ]


def fetch(params: TableParams, out_dir: Path, downloads_dir: Path) -> dict[str, object]:
    kept = _kept_table(params, out_dir, downloads_dir)
    table = read_table(kept.path)
    chosen = _columns(params, table)
    root, root_written = _image_root(params, params.path)
    rows, skipped = _listing(table, chosen, root)
    if not rows:
        raise StageError(
            f"download: none of the {len(table)} rows of {kept.path.name} names a readable "
            f"image below {str(root)!r}; the first problem: "
            f"{skipped[0]['reason'] if skipped else 'the table is empty'}"
        )
    columns = LISTING_COLUMNS + [c for c in (SPLIT_COLUMN, GROUP_COLUMN) if c in chosen]
    write_listing(out_dir / LISTING_FILE, [{c: row[c] for c in columns} for row in rows], columns)
    record = {
        "kind": "table",
        "url": redact_url(params.url),
        "path": None if params.url else Path(params.path).as_posix(),
        "table": kept.path.name,
        "table_sha256": kept.sha256,
        "root": root_written,
        "sha256": hashlib.sha256((out_dir / LISTING_FILE).read_bytes()).hexdigest(),
        "size": len(rows),
        "bytes": sum(row["size"] for row in rows),
        "class_names": sorted({row["label"] for row in rows}),
        "columns": chosen,
        "layout": "table",
        "listing": LISTING_FILE,
        "skipped": skipped,
        "label_conflicts": _conflicting_labels(table, chosen),
    }
    if SPLIT_COLUMN in chosen:
        record["splits"] = dict(sorted(Counter(r[SPLIT_COLUMN] or "-" for r in rows).items()))
    return record


def list_items(raw_dir: Path, source: dict) -> list[RawItem]:
    """The listed images, read in place below the root and checked against their sha256."""
    root = local_path(source["root"])
    if not root.is_dir():
        raise RawDataError(
            f"the image folder {str(root)!r} the table's paths are relative to is gone; "
            "restore it or set download.root to its new place and run `dvc repro`"
        )
    return [
        RawItem(
            origin=row["path"],
            label=row["label"],
            read=verified_reader(root, row["path"], row["sha256"]),
            split=row.get(SPLIT_COLUMN) or None,
            group=row.get(GROUP_COLUMN) or None,
        )
        for row in read_listing(raw_dir / source.get("listing", LISTING_FILE))
    ]


SOURCE = Source("table", TableParams, fetch, list_items)

"""A .zip, .tar or .tar.gz from a URL or a local path, checked against its sha256 and kept in
data/raw as it is: ``prepare`` reads its members directly, because DVC tracks one file far
faster than thousands."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from imgpipe.errors import StageError
from imgpipe.fetch_errors import ChecksumMismatch
from imgpipe.file_hash import Fetched
from imgpipe.layout import local_path
from imgpipe.redact import redact_url
from imgpipe.sources.common import (
    ArchiveSourceParams,
    LabelPattern,
    Sha256,
    Source,
    archive_items,
    copy_hashed,
    download_url,
    inspect_archive,
    keep_archive,
    limits,
)


class ArchiveParams(ArchiveSourceParams):
    source: Literal["archive"] = "archive"
    url: str | None = Field(None, description="where to download the archive from")
    path: str | None = Field(None, description="a local .zip/.tar/.tar.gz")
    sha256: Sha256 = Field(description="the archive's checksum (`sha256sum FILE` prints it)")
    label_pattern: LabelPattern | None = Field(
        None, description="regular expression on file names; group 1 is the class"
    )

    @model_validator(mode="after")
    def _url_or_path(self) -> ArchiveParams:
        if bool(self.url) == bool(self.path):
            raise ValueError("source 'archive' needs exactly one of download.url, download.path")
        return self


def _local_archive(params: ArchiveParams) -> Path:
    path = local_path(params.path).resolve()
    if not path.is_file():
        if path.is_dir():
            raise StageError(
                f"download.path {str(path)!r} is a folder, not an archive: for a folder of "
                "images write `source: folder` (and keep `path`, drop `sha256`), or point "
                "path at a .zip, .tar or .tar.gz file"
            )
        raise StageError(
            f"download.path {str(path)!r} is not a file: point it at a .zip, .tar or "
            ".tar.gz file (paths relative to the project folder work in every clone)"
        )
    return path


def _kept(params: ArchiveParams, out_dir: Path, downloads: Path) -> Fetched:
    """The verified archive in data/raw, a file of ours: what download checks, prepare reads.

    A local file is copied and hashed in one read, so replacing it at any moment cannot put
    unverified bytes in data/raw; a download is verified in our downloads folder and linked.
    """
    if params.url:
        fetched = download_url(params, params.url, params.sha256, downloads, "archive")
        return keep_archive(fetched, out_dir, fetched.path.name)
    path = _local_archive(params)
    kept = copy_hashed(path, out_dir / path.name)
    if kept.sha256 != params.sha256:
        kept.path.unlink()
        raise ChecksumMismatch(
            f"{path}: sha256 is {kept.sha256}, expected {params.sha256}. The file is not the "
            "one the params name, or it changed while it was copied; check download.path and "
            "download.sha256 in params.yaml."
        )
    return kept


def fetch(params: ArchiveParams, out_dir: Path, downloads_dir: Path) -> dict[str, object]:
    kept = _kept(params, out_dir, downloads_dir)
    description = inspect_archive(kept.path, params.label_pattern, limits(params))
    return {
        "kind": "archive",
        "url": redact_url(params.url),
        # As written: a path relative to the project reads the same in every clone.
        "path": None if params.url else Path(params.path).as_posix(),
        "sha256": kept.sha256,
        "bytes": kept.size,
        "layout": "archive",
        "archive": kept.path.name,
        **description,
    }


SOURCE = Source("archive", ArchiveParams, fetch, archive_items)

"""A .zip, .tar or .tar.gz from a URL or a local path, checked against its sha256 and kept in
data/raw as it is: ``prepare`` reads its members directly, because DVC tracks one file far
faster than thousands."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from imgpipe.errors import StageError
from imgpipe.fetch import redact_url, verified_file
from imgpipe.layout import local_path
from imgpipe.sources.common import (
    ArchiveSourceParams,
    LabelPattern,
    Sha256,
    Source,
    archive_items,
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


def _verified(params: ArchiveParams, downloads: Path):
    """The verified file: downloaded (or reused) for a URL, checked in place for a path."""
    if params.path:
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
        return verified_file(path, params.sha256, str(path))
    return download_url(params, params.url, params.sha256, downloads, "archive")


def fetch(params: ArchiveParams, out_dir: Path, downloads_dir: Path) -> dict[str, object]:
    fetched = _verified(params, downloads_dir)
    name = fetched.path.name
    description = inspect_archive(fetched.path, params.label_pattern, limits(params))
    keep_archive(fetched, out_dir, name, own_copy=not params.path)
    return {
        "kind": "archive",
        "url": redact_url(params.url),
        # As written: a path relative to the project reads the same in every clone.
        "path": None if params.url else Path(params.path).as_posix(),
        "sha256": fetched.sha256,
        "bytes": fetched.size,
        "layout": "archive",
        "archive": name,
        **description,
    }


SOURCE = Source("archive", ArchiveParams, fetch, archive_items)

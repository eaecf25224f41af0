"""A Kaggle competition's or dataset's file, through the official ``kaggle`` package, checked
and kept in data/raw as the archive it is.

Credentials are the package's own: KAGGLE_USERNAME and KAGGLE_KEY in the environment, or
kaggle.json in its config folder. This module only checks that one of them is there, to say
exactly what to do when none is, and hands nothing secret to anything that is written: not
to params, logs, source.json or the download's file name.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import requests
import urllib3
from pydantic import Field, field_validator, model_validator

from imgpipe.errors import StageError
from imgpipe.file_hash import verified_file
from imgpipe.redact import redact_text
from imgpipe.sources.common import (
    ArchiveSourceParams,
    LabelPattern,
    Sha256,
    Source,
    archive_items,
    inspect_archive,
    keep_archive,
    limits,
)

log = logging.getLogger("imgpipe.kaggle")

TOKEN_PAGE = "https://www.kaggle.com/settings"
# Kaggle with neither a competition nor a dataset named: the dogs-vs-cats example.
EXAMPLE = {
    "competition": "dogs-vs-cats",
    "file": "train.zip",
    "label_pattern": r"^(cat|dog)\.",
}


class KaggleParams(ArchiveSourceParams):
    source: Literal["kaggle"] = "kaggle"
    competition: str | None = Field(None, description="competition name")
    dataset: str | None = Field(None, description="dataset as owner/name")
    file: str | None = Field(None, description="one file of the competition or dataset")
    sha256: Sha256 | None = Field(None, description="expected sha256 of the downloaded file")
    label_pattern: LabelPattern | None = Field(
        None, description="regular expression on file names; group 1 is the class"
    )

    @model_validator(mode="before")
    @classmethod
    def _example(cls, data: Any) -> Any:
        if isinstance(data, dict) and not (data.get("competition") or data.get("dataset")):
            return {**EXAMPLE, **data}
        return data

    @field_validator("dataset")
    @classmethod
    def _owner_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[\w.-]+/[\w.-]+", value):
            raise ValueError("must be owner/name, as in its Kaggle URL")
        return value

    @model_validator(mode="after")
    def _competition_or_dataset(self) -> KaggleParams:
        if bool(self.competition) == bool(self.dataset):
            raise ValueError(
                "source 'kaggle' needs exactly one of download.competition (e.g. "
                "dogs-vs-cats) and download.dataset (owner/name)"
            )
        return self


class KaggleError(StageError):
    pass


@dataclass(frozen=True)
class KaggleRef:
    competition: str | None
    dataset: str | None
    file: str | None

    @property
    def url(self) -> str:
        if self.competition:
            return f"https://www.kaggle.com/competitions/{self.competition}"
        return f"https://www.kaggle.com/datasets/{self.dataset}"

    @property
    def folder_name(self) -> str:
        return (self.competition or self.dataset).replace("/", "__")


def config_dir(environ: dict[str, str] | None = None) -> Path:
    """Where the kaggle package looks for kaggle.json (same order as the package)."""
    environ = os.environ if environ is None else environ
    if environ.get("KAGGLE_CONFIG_DIR"):
        return Path(environ["KAGGLE_CONFIG_DIR"])
    home = Path(environ.get("HOME") or Path.home())
    legacy = home / ".kaggle"
    if legacy.exists() or not sys.platform.startswith("linux"):
        return legacy
    return Path(environ.get("XDG_CONFIG_HOME") or home / ".config") / "kaggle"


def credential_source(environ: dict[str, str] | None = None) -> str:
    """Where credentials come from ("environment" or a kaggle.json path); never the secret."""
    environ = os.environ if environ is None else environ
    if environ.get("KAGGLE_USERNAME") and environ.get("KAGGLE_KEY"):
        return "environment"
    path = config_dir(environ) / "kaggle.json"
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = None
        if isinstance(data, dict) and data.get("username") and data.get("key"):
            return str(path)
        raise KaggleError(
            f'{path} exists but does not hold a "username" and a "key"; download a new '
            f"kaggle.json from {TOKEN_PAGE} (API -> Create New Token) and put it there"
        )
    raise KaggleError(
        "no Kaggle credentials found. Either set KAGGLE_USERNAME and KAGGLE_KEY in the "
        f"environment, or save kaggle.json (from {TOKEN_PAGE}, API -> Create New Token) as "
        f"{path} with `chmod 600` (the kaggle package reads ~/.kaggle/kaggle.json if that "
        "folder exists, else ~/.config/kaggle/kaggle.json on Linux, or the folder "
        "KAGGLE_CONFIG_DIR names). They are read from there only, never from params.yaml."
    )


def _client():
    # The package authenticates, and prints help, when imported; keep that off the output
    # and turn its exit into a message that says what to do.
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            from kaggle.api.kaggle_api_extended import KaggleApi

            api = KaggleApi()
            api.authenticate()
    except SystemExit:
        raise KaggleError(
            "the kaggle package did not accept the credentials it found; check "
            f"KAGGLE_USERNAME / KAGGLE_KEY or kaggle.json (new token: {TOKEN_PAGE})"
        ) from None
    except ImportError as err:
        raise KaggleError(
            f"the kaggle package is not installed ({err}): pip install kaggle"
        ) from None
    return api


def download(ref: KaggleRef, folder: Path) -> Path:
    """Download the competition's or dataset's file (or all files, zipped) into ``folder``."""
    source = credential_source()
    log.info("Kaggle credentials from %s", source)
    api = _client()
    folder.mkdir(parents=True, exist_ok=True)
    before = {p.name for p in folder.iterdir()}
    try:
        if ref.competition and ref.file:
            api.competition_download_file(ref.competition, ref.file, path=str(folder), quiet=False)
        elif ref.competition:
            api.competition_download_files(ref.competition, path=str(folder), quiet=False)
        elif ref.file:
            api.dataset_download_file(ref.dataset, ref.file, path=str(folder), quiet=False)
        else:
            api.dataset_download_files(ref.dataset, path=str(folder), quiet=False)
    except Exception as err:
        raise _explain(err, ref) from None
    return _downloaded_file(folder, before, ref)


def _downloaded_file(folder: Path, before: set[str], ref: KaggleRef) -> Path:
    candidates = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    candidates = [p for p in candidates if not p.name.endswith((".kaggle-partial", ".part"))]
    new = [p for p in candidates if p.name not in before]
    wanted = [p for p in candidates if ref.file and p.name in (ref.file, ref.file + ".zip")]
    for group in (wanted, new, candidates):
        if len(group) == 1:
            return group[0]
    raise KaggleError(f"cannot tell which file in {folder} the Kaggle download produced")


def _explain(err: Exception, ref: KaggleRef) -> KaggleError:
    status = getattr(getattr(err, "response", None), "status_code", None)
    what = f"competition {ref.competition!r}" if ref.competition else f"dataset {ref.dataset!r}"
    if status == 401:
        return KaggleError(
            "Kaggle rejected the credentials (HTTP 401): check KAGGLE_USERNAME / KAGGLE_KEY "
            f"or kaggle.json; a new token is made at {TOKEN_PAGE}"
        )
    if status == 403:
        rules = f"{ref.url}/rules" if ref.competition else ref.url
        return KaggleError(
            f"Kaggle refused the {what} (HTTP 403). If it is a competition, open {rules} while "
            "logged in as the account whose key you use, click 'I Understand and Accept', and "
            "rerun `dvc repro`."
        )
    if status == 404:
        file = f" file {ref.file!r} of" if ref.file else ""
        return KaggleError(
            f"Kaggle has no{file} {what} (HTTP 404): check download.competition, "
            "download.dataset and download.file against the page's Data tab"
        )
    # The package's errors can hold the signed download URL: never shown as it is.
    text = redact_text(str(err))[:300]
    if isinstance(err, requests.exceptions.SSLError):
        return KaggleError(
            f"the TLS (https) connection to Kaggle failed ({text}): check this machine's clock; "
            "behind a proxy that inspects TLS, point REQUESTS_CA_BUNDLE at your "
            "organisation's CA bundle"
        )
    timeouts = (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)
    if isinstance(err, timeouts):
        return KaggleError(
            f"Kaggle did not answer in time while downloading the {what} ({text}): check the "
            "network and rerun `dvc repro`"
        )
    connection = (requests.ConnectionError, urllib3.exceptions.HTTPError, ConnectionError)
    if isinstance(err, connection):
        return KaggleError(
            f"cannot reach Kaggle to download the {what} ({text}): a Kaggle source needs the "
            "internet; check the network (and HTTPS_PROXY behind a proxy) and rerun `dvc repro`"
        )
    if status == 429 or (status or 0) >= 500:
        return KaggleError(
            f"Kaggle failed to send the {what} (HTTP {status}): its servers are busy or "
            "failing; rerun `dvc repro` later"
        )
    return KaggleError(f"Kaggle download of {what} failed: {type(err).__name__}: {text}")


def fetch(params: KaggleParams, out_dir: Path, downloads_dir: Path) -> dict[str, object]:
    ref = KaggleRef(params.competition, params.dataset, params.file)
    path = download(ref, downloads_dir / "kaggle" / ref.folder_name)
    fetched = keep_archive(
        verified_file(path, params.sha256, f"Kaggle file {path.name}"), out_dir, path.name
    )
    description = inspect_archive(fetched.path, params.label_pattern, limits(params))
    return {
        "kind": "kaggle",
        "url": ref.url,
        "path": None,
        "competition": ref.competition,
        "dataset": ref.dataset,
        "file": ref.file,
        "sha256": fetched.sha256,
        "bytes": fetched.size,
        "layout": "archive",
        "archive": path.name,
        **description,
    }


SOURCE = Source("kaggle", KaggleParams, fetch, archive_items)

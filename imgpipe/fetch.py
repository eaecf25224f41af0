"""Fetching one file over HTTP so that only verified bytes are ever used.

The file is streamed into ``<name>.part`` beside its final place, with timeouts, retries and
resume by HTTP Range; a server that ignores Range (answers 200 instead of 206) restarts the
file cleanly instead of appending a second copy. The sha256 is checked before the ``.part``
file is renamed, so a finished file is always a verified file and a mismatch leaves nothing
behind that a later run could take for the real download.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote_plus, urlsplit, urlunsplit

import requests
from tqdm import tqdm

from imgpipe.errors import StageError

log = logging.getLogger("imgpipe.fetch")

CHUNK = 1 << 16  # small enough that a dropped connection loses little
# Failures worth another try: the network, not the request, was at fault.
RETRIABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}
# Query parameters that carry credentials (signed URLs, API tokens): never written anywhere.
SECRET_QUERY = re.compile(r"token|key|sig|signature|password|passwd|secret|credential", re.I)
HIDDEN = "***"


class FetchError(StageError):
    """A download failed or its bytes are not the expected ones."""


class ChecksumMismatch(FetchError):
    pass


@dataclass(frozen=True)
class FetchSettings:
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retries: int = 5
    backoff: float = 1.0  # seconds before the first retry, doubled after each


@dataclass(frozen=True)
class Fetched:
    path: Path
    sha256: str
    size: int


def url_secrets(url: str) -> list[str]:
    """The credentials inside ``url``: user and password, secret-looking query values."""
    parts = urlsplit(url)
    found = [parts.username, parts.password]
    for segment in parts.query.split("&"):
        name, has_value, value = segment.partition("=")
        if has_value and SECRET_QUERY.search(unquote_plus(name)):
            found.append(value)
    # Both spellings: a library may show the value percent-encoded or decoded.
    found += [unquote_plus(secret) for secret in found if secret]
    return sorted({secret for secret in found if secret}, key=len, reverse=True)


def redact_url(url: str | None) -> str | None:
    """``url`` safe to record or show: credentials replaced by ``***``."""
    if not url:
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{HIDDEN}@{netloc.rpartition('@')[2]}"
    segments = []
    for segment in parts.query.split("&") if parts.query else []:
        name, has_value, _ = segment.partition("=")
        secret = has_value and SECRET_QUERY.search(unquote_plus(name))
        segments.append(f"{name}={HIDDEN}" if secret else segment)
    return urlunsplit(parts._replace(netloc=netloc, query="&".join(segments)))


def redact_text(text: str, url: str) -> str:
    """``text`` (an error from the network library, say) without ``url``'s credentials."""
    for secret in url_secrets(url):
        text = text.replace(secret, HIDDEN)
    return text


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def part_path(target: Path) -> Path:
    return target.with_name(target.name + ".part")


def verified_file(path: Path, expected: str | None, what: str) -> Fetched:
    """Hash ``path``; if a checksum is expected, a mismatch is an error that names both."""
    actual = file_sha256(path)
    if expected and actual != expected.lower():
        raise ChecksumMismatch(
            f"{what}: sha256 is {actual}, expected {expected.lower()}. The file is corrupt, "
            "truncated or not the one the params name; check the URL and the sha256 in "
            "params.yaml (a mirror must serve the identical file)."
        )
    return Fetched(path, actual, path.stat().st_size)


def fetch(
    url: str,
    target: Path,
    sha256: str | None,
    settings: FetchSettings = FetchSettings(),
    session: requests.Session | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Fetched:
    """Download ``url`` to ``target`` (resuming ``target.part``) and verify it.

    A ``target`` that already exists with the expected sha256 is reused without any traffic.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and sha256:
        if file_sha256(target) == sha256.lower():
            log.info("%s: already downloaded and verified", target.name)
            return Fetched(target, sha256.lower(), target.stat().st_size)
        target.unlink()
    part = part_path(target)
    session = session or requests.Session()
    attempt = 0
    while True:
        try:
            _stream_into(url, part, session, settings)
            break
        except (requests.ConnectionError, requests.Timeout, _Retriable) as err:
            attempt += 1
            if attempt > settings.retries:
                raise FetchError(
                    f"downloading {redact_url(url)} failed after {settings.retries} retries: "
                    f"{redact_text(str(err), url)}. "
                    f"Check the network and rerun; the {part_path(target).name} file is kept "
                    "so the next run resumes where this one stopped."
                ) from None
            delay = settings.backoff * 2 ** (attempt - 1)
            log.warning(
                "download interrupted (%s); retry %d in %.0f s",
                redact_text(str(err), url),
                attempt,
                delay,
            )
            sleep(delay)
    try:
        fetched = verified_file(part, sha256, redact_url(url))
    except ChecksumMismatch:
        part.unlink()  # resuming onto wrong bytes could never succeed
        raise
    os.replace(part, target)
    return Fetched(target, fetched.sha256, fetched.size)


class _Retriable(Exception):
    pass


def _stream_into(url: str, part: Path, session: requests.Session, settings: FetchSettings) -> None:
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    timeout = (settings.connect_timeout, settings.read_timeout)
    with session.get(url, headers=headers, stream=True, timeout=timeout) as response:
        if response.status_code == 416:
            total = re.fullmatch(r"bytes \*/(\d+)", response.headers.get("Content-Range", ""))
            if total and int(total.group(1)) == offset:
                return  # a run killed between the last byte and the rename: complete
            part.unlink()  # longer than the file: nothing sane to resume from
            raise _Retriable("server refused the resume range; starting again")
        if response.status_code in RETRIABLE_STATUS:
            raise _Retriable(f"HTTP {response.status_code}")
        if response.status_code not in (200, 206):
            raise FetchError(
                f"downloading {redact_url(url)} failed: HTTP {response.status_code} "
                f"{response.reason}. "
                "Check the URL in params.yaml."
            )
        offset = _resume_offset(response, offset)
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        mode = "ab" if offset else "wb"
        with (
            open(part, mode) as out,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=part.name[: -len(".part")],
                mininterval=1.0,
            ) as progress,
        ):
            try:
                for chunk in response.iter_content(CHUNK):
                    out.write(chunk)
                    progress.update(len(chunk))
            except (requests.exceptions.ChunkedEncodingError, requests.ConnectionError) as err:
                raise _Retriable(f"connection lost after {out.tell()} bytes: {err}") from None
        written = part.stat().st_size
        if total is not None and written < total:
            raise _Retriable(f"connection closed after {written} of {total} bytes")


def _resume_offset(response: requests.Response, offset: int) -> int:
    """Where the body starts in the file: 0 when the server sends the whole file again."""
    if response.status_code == 200:
        if offset:
            log.info("server ignored the resume request; downloading from the start")
        return 0
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    if not match or int(match.group(1)) != offset:
        raise FetchError(
            f"server answered a resume from byte {offset} with Content-Range "
            f"{response.headers.get('Content-Range')!r}; delete the .part file and rerun"
        )
    return offset

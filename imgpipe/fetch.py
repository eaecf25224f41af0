"""Fetching one file over HTTP so that only verified bytes are ever used, within set bounds.

The file is streamed into ``<name>.part`` beside its final place, with timeouts, retries and
resume by HTTP Range; a server that ignores Range (answers 200 instead of 206) restarts the
file cleanly instead of appending a second copy. The sha256 is checked before the ``.part``
file is renamed, so a finished file is always a verified file and a mismatch leaves nothing
behind that a later run could take for the real download.

What a hostile or broken server cannot do:

- lead the download elsewhere: redirects are followed here, not by ``requests``, at most
  ``max_redirects`` of them, only to http(s), and each target's host is resolved and its
  addresses checked by ``imgpipe.addresses`` before any connection is made to it (link-local
  and metadata addresses never; loopback and private ones only when the user's URL was on
  such an address). The address a connection actually reaches is checked again when the
  socket connects, before a request is sent, so a name that resolves differently the second
  time (DNS rebinding) gains nothing;
- hold it forever: besides ``read_timeout`` (seconds without any data), a watchdog thread
  ends the download when the whole of it (retries and waits included) passes ``deadline``
  seconds, when the body arrives slower than ``min_rate`` bytes/s over ``rate_window``
  seconds, or when the response headers take longer than the connect and read timeouts
  together. A blocked read cannot look at a clock, so the watchdog shuts the socket down and
  its reason replaces whatever error the read then gives;
- inflate it: the request asks for ``Accept-Encoding: identity`` and the body is never
  decoded, so the ``.part`` file holds exactly the bytes sent and a gzip bomb stays its
  compressed size. Those are the bytes hashed. That is also what keeps a ``.tar.gz`` served
  by a misconfigured server with ``Content-Encoding: gzip`` working: the bytes sent are the
  ``.tar.gz`` file. A server that compresses on the fly although asked not to sends bytes
  whose sha256 does not match, and the mismatch says so.

Every failure is a ``FetchError`` naming the URL with its credentials hidden and what to try.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urljoin

import requests
import urllib3
from requests.utils import get_auth_from_url, get_environ_proxies, requote_uri, select_proxy
from tqdm import tqdm

from imgpipe.addresses import PUBLIC, NameNotFound, TargetRefused, check_target, widest_origin
from imgpipe.download_guard import DownloadGuard, PeerRefused, guarded_session
from imgpipe.fetch_errors import ChecksumMismatch, FetchError
from imgpipe.fetch_settings import FetchSettings
from imgpipe.file_hash import Fetched, file_sha256, verified_file
from imgpipe.redact import redact_text, redact_url

log = logging.getLogger("imgpipe.fetch")

CHUNK = 1 << 16  # small enough that a dropped connection loses little
# Failures worth another try: the network, not the request, was at fault.
RETRIABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}


def part_path(target: Path) -> Path:
    return target.with_name(target.name + ".part")


# --- the entry points ------------------------------------------------------------------------


def fetch(
    url: str,
    target: Path,
    sha256: str | None,
    settings: FetchSettings = FetchSettings(),
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
    resume = f"the {part.name} file is kept so the next run resumes where this one stopped"
    with _Download(url, settings, user_url=True, resume_hint=resume) as download:
        download.with_retries(lambda: download.into_part(part), sleep)
        encoding = download.encoding
    if encoding:
        log.warning(
            "%s was sent with Content-Encoding: %s although asked not to compress it; "
            "it is kept exactly as sent and its sha256 decides whether it is the file",
            redact_url(url),
            encoding,
        )
    try:
        fetched = verified_file(part, sha256, redact_url(url))
    except ChecksumMismatch as err:
        part.unlink()  # resuming onto wrong bytes could never succeed
        if encoding:
            raise ChecksumMismatch(
                f"{err} The server sent it with Content-Encoding: {encoding} although asked "
                "not to compress it; the bytes are kept as sent (a .tar.gz labelled gzip still "
                "verifies), and these do not match. If the sha256 is that of the uncompressed "
                "file, this server compresses it on the fly: download it from a server or "
                "mirror that sends the file as it is."
            ) from None
        raise
    os.replace(part, target)
    return Fetched(target, fetched.sha256, fetched.size)


def fetch_bytes(url: str, settings: FetchSettings, user_url: bool = True) -> bytes:
    """The body at ``url`` in memory, for small files such as crawled images: the same
    redirect policy, deadline, rate floor and identity encoding as ``fetch``, at most
    ``settings.max_bytes``, and no resume.

    ``user_url=False`` is for URLs that came from elsewhere (a search engine's results): the
    URL itself is then held to the policy for redirects from a public address.
    """
    with _Download(url, settings, user_url=user_url, resume_hint="") as download:
        return download.with_retries(download.into_memory, time.sleep)


# --- one download ----------------------------------------------------------------------------


class _Retriable(Exception):
    """A failure another try may not meet; ``hint`` says what to do if it keeps failing."""

    def __init__(self, what: str, hint: str = "Check the network and rerun") -> None:
        super().__init__(what)
        self.hint = hint


class _Download:
    """One download of ``url``: its guarded session, its watchdog and its redirect policy."""

    def __init__(self, url: str, settings: FetchSettings, user_url: bool, resume_hint: str):
        self.url = url
        self.shown = redact_url(url)
        self.settings = settings
        self.user_url = user_url
        self.resume_hint = resume_hint
        self.guard = DownloadGuard(settings, self.shown, resume_hint)
        self.session = guarded_session(self.guard)
        # The kind of address the user's URL is on (addresses.LOOPBACK, PRIVATE, PUBLIC).
        self.origin = PUBLIC
        self.encoding: str | None = None

    def __enter__(self) -> _Download:
        self.guard.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.guard.stop()
        self.session.close()

    # -- retries and what each failure means

    def with_retries(self, attempt: Callable[[], object], sleep: Callable[[float], None]):
        tries = 0
        while True:
            try:
                result = attempt()
            except Exception as err:  # each kind is sorted in _problem
                problem = self._problem(err)
            else:
                self._raise_if_tripped()
                return result
            tries += 1
            if tries > self.settings.retries:
                raise FetchError(
                    self._sentence(
                        f"downloading {self.shown} failed after {self.settings.retries} "
                        f"retries: {problem}. {problem.hint}"
                    )
                ) from None
            delay = self.settings.backoff * 2 ** (tries - 1)
            if delay >= self.guard.remaining():
                raise self.guard.deadline_error(f" (the last try failed: {problem})") from None
            log.warning(
                "downloading %s was interrupted (%s); retry %d in %.0f s",
                self.shown,
                problem,
                tries,
                delay,
            )
            self.guard.idle()
            sleep(delay)

    def _sentence(self, text: str) -> str:
        return f"{text}; {self.resume_hint}." if self.resume_hint else f"{text}."

    def _raise_if_tripped(self) -> None:
        if self.guard.failure:
            raise self.guard.failure from None

    def _problem(self, err: Exception) -> _Retriable:
        """The retriable problem ``err`` stands for; anything final is raised as a FetchError."""
        self._raise_if_tripped()  # a shut-down socket fails in whatever way it fails
        if isinstance(err, FetchError):
            raise err
        if isinstance(err, _Retriable):
            return err
        if isinstance(err, PeerRefused):
            raise FetchError(
                f"downloading {self.shown}: refused to connect, because {err}. A download "
                "connects to loopback and private addresses only when download.url itself is "
                "on one, and to link-local or metadata addresses never."
            ) from None
        text = _short_reason(redact_text(str(err), self.url))
        if isinstance(err, requests.exceptions.SSLError):
            raise FetchError(
                f"downloading {self.shown}: the TLS (https) connection failed: {text}. Check "
                "the URL's host (a mirror needs a valid certificate for its own name) and this "
                "machine's clock; behind a proxy that inspects TLS, point REQUESTS_CA_BUNDLE at "
                "your organisation's CA bundle."
            ) from None
        if isinstance(err, requests.exceptions.ConnectTimeout):
            return _Retriable(
                f"connecting timed out after {self.settings.connect_timeout:g} s",
                "Check the host and port in download.url and the network, and rerun",
            )
        if isinstance(err, requests.exceptions.ReadTimeout | urllib3.exceptions.ReadTimeoutError):
            return _Retriable(
                f"no data for {self.settings.read_timeout:g} s",
                "The server stopped sending: rerun, or raise download.timeout for a slow server",
            )
        if isinstance(err, requests.exceptions.ProxyError):
            return _Retriable(f"the proxy failed: {text}", "Check the proxy settings and rerun")
        if isinstance(err, requests.exceptions.ConnectionError) and "refused" in text.lower():
            return _Retriable(
                f"the connection was refused ({text})",
                "Check that the host and port in download.url are right and the server is up",
            )
        connection = (
            requests.exceptions.ConnectionError,
            requests.exceptions.ChunkedEncodingError,
            requests.exceptions.ContentDecodingError,
            urllib3.exceptions.HTTPError,
            OSError,
        )
        if isinstance(err, connection):
            return _Retriable(f"the connection failed ({text})")
        if isinstance(err, requests.RequestException):
            raise FetchError(
                f"downloading {self.shown} failed: {text}. Check download.url: it must be a "
                "complete http:// or https:// address."
            ) from None
        raise err

    # -- following redirects

    def open(self, headers: dict[str, str]) -> requests.Response:
        """The response at the end of ``url``'s redirects, each target checked before any
        connection is made to it."""
        current = self.url
        auth = get_auth_from_url(current)
        for hop in range(self.settings.max_redirects + 1):
            self._check(current, first=hop == 0)
            self.guard.waiting()
            response = self.session.get(
                current,
                headers=headers,
                stream=True,
                timeout=(self.settings.connect_timeout, self.settings.read_timeout),
                allow_redirects=False,
                auth=auth if auth[0] else None,
            )
            location = _redirect_target(response)
            if location is None:
                return response
            response.close()  # never read a redirect's body: it could be endless
            try:
                following = urljoin(current, requote_uri(location))
                strip = self.session.should_strip_auth(current, following)
            except ValueError:
                raise FetchError(
                    f"downloading {self.shown}: the server redirects to {redact_text(location)!r}, "
                    "which is not a valid address; check download.url."
                ) from None
            if strip:
                auth = ("", "")  # as a browser does: credentials stay with their host
            log.debug("%s redirects to %s", redact_url(current), redact_url(following))
            current = following
        raise FetchError(
            f"downloading {self.shown}: more than {self.settings.max_redirects} redirects "
            f"(the last to {redact_url(current)}); the server redirects in a loop. Open the URL "
            "in a browser to find where the file really is and put that in download.url."
        )

    def _check(self, url: str, first: bool) -> None:
        """Refuse ``url`` before connecting to it if the address policy forbids it."""
        user_url = first and self.user_url
        try:
            addresses = check_target(url, None if user_url else self.origin)
        except TargetRefused as err:
            if first:
                raise FetchError(
                    f"cannot download {redact_url(url)}: {err}. Check download.url."
                ) from None
            raise FetchError(
                f"downloading {self.shown}: refused to follow its redirect to {redact_url(url)}: "
                f"{err}. Redirects are followed only to http(s) addresses, never to link-local "
                "or metadata addresses, and to loopback or private ones only from a URL on "
                "one; if the file really is there, put that address in download.url itself."
            ) from None
        except NameNotFound as err:
            if self._through_proxy(url):
                addresses = []  # the proxy resolves the name; it cannot be checked here
            elif err.transient:
                hint = "Check this machine's network and DNS settings"
                raise _Retriable(str(err), hint) from None
            else:
                raise FetchError(
                    f"downloading {self.shown}: {err}. Check the host name in download.url "
                    "(and in any address it redirects to) and this machine's DNS settings."
                ) from None
        if user_url:
            self.origin = widest_origin(addresses) if addresses else PUBLIC
        self.guard.hop_origin = None if user_url else self.origin

    def _through_proxy(self, url: str) -> bool:
        proxies = get_environ_proxies(url) if self.session.trust_env else {}
        return bool(select_proxy(url, {**proxies, **self.session.proxies}))

    # -- the body

    def into_part(self, part: Path) -> None:
        offset = part.stat().st_size if part.exists() else 0
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        with self.open(headers) as response:
            if response.status_code == 416:
                total = re.fullmatch(r"bytes \*/(\d+)", response.headers.get("Content-Range", ""))
                if total and int(total.group(1)) == offset:
                    return  # a run killed between the last byte and the rename: complete
                part.unlink()  # longer than the file: nothing sane to resume from
                raise _Retriable("server refused the resume range; starting again")
            self._check_status(response)
            offset = _resume_offset(response, offset)
            total = self._expected_total(response, offset)
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
                for chunk in self._body(response, offset, total):
                    _write(out, chunk, part)
                    progress.update(len(chunk))
        self._raise_if_tripped()  # a shut-down socket can end a body early without an error
        written = part.stat().st_size
        if total is not None and written < total:
            raise _Retriable(
                f"the connection closed after {written} of {total} bytes",
                "The server sends less than it announces: rerun later or use another mirror",
            )

    def into_memory(self) -> bytes:
        with self.open({"Accept-Encoding": "identity"}) as response:
            self._check_status(response)
            total = self._expected_total(response, 0)
            data = b"".join(self._body(response, 0, total))
        self._raise_if_tripped()
        if total is not None and len(data) < total:
            raise _Retriable(f"the connection closed after {len(data)} of {total} bytes")
        return data

    def _check_status(self, response: requests.Response) -> None:
        status = response.status_code
        if status in RETRIABLE_STATUS:
            raise _Retriable(
                f"HTTP {status}", "The server is failing: rerun later or use another mirror"
            )
        if status not in (200, 206):
            reason = (response.reason or "")[:80]
            hint = (
                "The server refuses access: a URL that needs a login or a signed link (which "
                "expires) does not work here; use a public URL or a mirror."
                if status in (401, 403)
                else "Check the URL in params.yaml."
            )
            raise FetchError(f"downloading {self.shown} failed: HTTP {status} {reason}. {hint}")
        encoding = response.headers.get("Content-Encoding", "").strip().lower()
        if encoding not in ("", "identity"):
            self.encoding = encoding[:40]

    def _expected_total(self, response: requests.Response, offset: int) -> int | None:
        length = response.headers.get("Content-Length", "")
        total = offset + int(length) if length.isdigit() else None
        limit = self.settings.max_bytes
        if limit is not None and total is not None and total > limit:
            raise FetchError(f"{self.shown} is {total} bytes, more than the {limit} accepted.")
        return total

    def _body(self, response: requests.Response, offset: int, total: int | None) -> Iterator[bytes]:
        """The body as sent, never decoded; each read returns as soon as any data is in, so
        the watchdog sees every byte arrive."""
        self.guard.body_started()
        limit = self.settings.max_bytes
        received = offset
        while True:
            try:
                chunk = response.raw.read1(CHUNK, decode_content=False)
            except urllib3.exceptions.ReadTimeoutError:
                raise
            except (urllib3.exceptions.HTTPError, OSError) as err:
                self._raise_if_tripped()
                if total is None:
                    raise _Retriable(
                        f"the connection broke after {received} bytes ({_short_reason(str(err))})"
                    ) from None
                raise _Retriable(
                    f"the connection broke after {received} of the {total} bytes announced "
                    f"({_short_reason(str(err))})",
                    "Rerun; if it keeps stopping early, the server sends less than it "
                    "announces: use another mirror",
                ) from None
            if not chunk:
                return
            received += len(chunk)
            self.guard.got(len(chunk))
            if limit is not None and received > limit:
                raise FetchError(f"{self.shown} sends more than the {limit} bytes accepted.")
            yield chunk


def _redirect_target(response: requests.Response) -> str | None:
    if not response.is_redirect:
        return None
    location = response.headers["Location"]
    try:  # sent as UTF-8 more often than as the Latin-1 it is read as (requests does the same)
        return location.encode("latin1").decode("utf8")
    except UnicodeError:
        return location


def _write(out, chunk: bytes, part: Path) -> None:
    try:
        out.write(chunk)
    except OSError as err:
        raise FetchError(
            f"cannot write {part}: {err.strerror or err}. Free some disk space (or check the "
            "folder's permissions) and rerun; the download resumes."
        ) from None


def _short_reason(text: str) -> str:
    """The readable end of a network library's error: "[Errno 111] Connection refused"
    rather than the pool, its host and the whole URL."""
    match = re.search(r"\[Errno -?\d+\] [^'\")\]]+|\[SSL[^\]]*\][^'\"(]*", text)
    return (match[0].strip() if match else text)[:300]


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

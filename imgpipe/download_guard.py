"""The watchdog that bounds one download in time, and the session whose sockets it sees.

``imgpipe.fetch`` says what it guards against and why; here is how: a side thread compares
the clock with the deadline, the rate floor and the wait for response headers, and shuts the
download's sockets down when one is passed. Each new socket's peer address is checked against
``imgpipe.addresses``'s policy as soon as it connects, before a request goes out on it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import deque

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from imgpipe.addresses import address_refusal
from imgpipe.fetch_errors import DeadlineExceeded, FetchError
from imgpipe.fetch_settings import KB, FetchSettings


class PeerRefused(Exception):
    """Raised while connecting, so it must be no exception urllib3 retries or wraps."""


class DownloadGuard:
    """Bounds one download in time from a side thread, and checks each socket's peer.

    ``hop_origin`` is the policy for the connection being made: None while on the user's own
    URL, else the kind of address that URL was on.
    """

    def __init__(self, settings: FetchSettings, shown: str, resume_hint: str) -> None:
        self.settings = settings
        self.shown = shown
        self.resume_hint = resume_hint
        self.started = time.monotonic()
        self.deadline_at = self.started + settings.deadline
        self.hop_origin: str | None = None
        self.failure: FetchError | None = None
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._waiting_since: float | None = None  # a request is out, its headers are not in
        self._samples: deque[tuple[float, int]] = deque()  # (time, body bytes) while reading
        self._received = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="fetch-watchdog", daemon=True)
        self._tick = max(0.02, min(1.0, settings.rate_window / 5, settings.deadline / 20))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def remaining(self) -> float:
        return self.deadline_at - time.monotonic()

    # -- told by the download

    def connected(self, sock: socket.socket, proxied: bool) -> None:
        """A new socket: refused if its peer is forbidden, else shut down when time is up."""
        if not proxied:  # through a proxy, the peer is the proxy, which the user chose
            peer = sock.getpeername()[0]
            reason = address_refusal(peer, self.hop_origin)
            if reason:
                sock.close()
                raise PeerRefused(f"the connection reached {peer}, which {reason}")
        with self._lock:
            self._sockets = [s for s in self._sockets if s.fileno() != -1] + [sock]
            tripped = self.failure is not None
        if tripped:
            _shut(sock)

    def waiting(self) -> None:
        with self._lock:
            self._waiting_since, self._samples = time.monotonic(), deque()

    def body_started(self) -> None:
        with self._lock:
            self._received = 0
            self._waiting_since, self._samples = None, deque([(time.monotonic(), 0)])

    def got(self, count: int) -> None:
        self._received += count  # one writer; the watchdog only reads it

    def idle(self) -> None:
        with self._lock:
            self._waiting_since, self._samples = None, deque()

    # -- the side thread

    def _watch(self) -> None:
        while not self._stop.wait(self._tick):
            failure = self._overdue(time.monotonic())
            if failure:
                with self._lock:
                    self.failure = failure
                    sockets = list(self._sockets)
                for sock in sockets:
                    _shut(sock)
                return

    def _overdue(self, now: float) -> FetchError | None:
        if now >= self.deadline_at:
            return self.deadline_error("")
        with self._lock:
            waiting_since, samples, received = self._waiting_since, self._samples, self._received
            if samples:
                samples.append((now, received))
                window = self.settings.rate_window
                while len(samples) > 1 and samples[1][0] <= now - window:
                    samples.popleft()
        wait = self.settings.connect_timeout + self.settings.read_timeout
        if waiting_since is not None and now - waiting_since > wait:
            return FetchError(
                self._sentence(
                    f"downloading {self.shown}: the server did not finish sending its response "
                    f"headers within {wait:g} s; it is stalling or is not an HTTP server. Check "
                    "the URL, or raise download.timeout if the server is only slow to answer"
                )
            )
        if samples and self.settings.min_rate > 0:
            since, before = samples[0]
            if now - since >= self.settings.rate_window:
                rate = (received - before) / (now - since)
                if rate < self.settings.min_rate:
                    return self._slow_error(rate, now - since)
        return None

    def deadline_error(self, detail: str) -> DeadlineExceeded:
        return DeadlineExceeded(
            self._sentence(
                f"downloading {self.shown} did not finish within download.deadline "
                f"({self.settings.deadline:g} s){detail}. Raise download.deadline for a large "
                "file on a slow link, or use a faster mirror"
            )
        )

    def _slow_error(self, rate: float, window: float) -> FetchError:
        floor = self.settings.min_rate
        return FetchError(
            self._sentence(
                f"downloading {self.shown}: only {rate:.0f} bytes/s over the last {window:.0f} "
                f"s, below download.min_rate_kbps ({floor / KB:g} KB/s = {floor:.0f} bytes/s); "
                "the server has all but stopped sending. If the link really is this slow, "
                "lower download.min_rate_kbps (0 turns the floor off); otherwise rerun later "
                "or use another mirror"
            )
        )

    def _sentence(self, text: str) -> str:
        return f"{text}; {self.resume_hint}." if self.resume_hint else f"{text}."


def _shut(sock: socket.socket) -> None:
    """End a socket another thread may be blocked reading: its read then returns at once.

    The plain socket's shutdown, also for a TLS socket, whose own would tear down its TLS
    state under the reading thread."""
    with contextlib.suppress(OSError):  # already closed
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


# --- the session whose sockets the guard sees ------------------------------------------------


class _Session(requests.Session):
    def resolve_redirects(self, *args, **kwargs):
        # _Download.open follows redirects; requests would parse each target even so (to
        # offer it as the response's next request) and fail on a malformed one.
        return iter(())


def guarded_session(guard: DownloadGuard) -> requests.Session:
    """A requests session whose every new connection is handed to ``guard`` once connected."""

    def guarded(base: type[HTTPConnection]) -> type[HTTPConnection]:
        class Guarded(base):
            def _new_conn(self) -> socket.socket:
                sock = super()._new_conn()
                guard.connected(sock, proxied=bool(self.proxy))
                return sock

        return Guarded

    class Pool(HTTPConnectionPool):
        ConnectionCls = guarded(HTTPConnection)

    class TLSPool(HTTPSConnectionPool):
        ConnectionCls = guarded(HTTPSConnection)

    pools = {"http": Pool, "https": TLSPool}

    class Adapter(HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = pools

        def proxy_manager_for(self, proxy: str, **kwargs):
            manager = super().proxy_manager_for(proxy, **kwargs)
            if not proxy.lower().startswith("socks"):  # SOCKS pools are their own kind
                manager.pool_classes_by_scheme = pools
            return manager

    session = _Session()
    adapter = Adapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session

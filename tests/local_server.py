"""A small HTTP server on 127.0.0.1 that tests start with data they make.

It serves files from a dict, honours Range requests (unless told not to), can drop the
connection part-way through a response, hands a path to a function of the test's own (to
drip, stall or lie), and records every request so tests can check what a client sent.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Behaviour:
    files: dict[str, bytes] = field(default_factory=dict)
    honour_range: bool = True
    # path -> how many bytes to send before dropping the connection, once per entry
    drop_after: dict[str, int] = field(default_factory=dict)
    # (method, path) -> (status, headers, body); answered before files are looked up
    routes: dict[tuple[str, str], tuple[int, dict[str, str], bytes]] = field(default_factory=dict)
    requests: list[dict] = field(default_factory=list)
    # path -> function(handler) that writes the whole answer itself, raw
    handlers: dict[str, Callable[[BaseHTTPRequestHandler], None]] = field(default_factory=dict)
    # set when the server stops, so a handler that drips or stalls ends with it
    closing: threading.Event = field(default_factory=threading.Event)


class _Handler(BaseHTTPRequestHandler):
    behaviour: Behaviour

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _record(self, body: bytes = b"") -> None:
        self.behaviour.requests.append(
            {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
        )

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._record(self.rfile.read(length))
        self._answer_route("POST") or self._send(404, {}, b"not found")

    def do_GET(self) -> None:
        self._record()
        handler = self.behaviour.handlers.get(self.path.split("?")[0])
        if handler is not None:
            try:
                handler(self)
            except OSError:  # the client gave up: what the test wanted to see
                self.close_connection = True
            return
        if self._answer_route("GET"):
            return
        path = self.path.split("?")[0]
        data = self.behaviour.files.get(path)
        if data is None:
            self._send(404, {}, b"not found")
            return
        start = 0
        header = self.headers.get("Range")
        if header and self.behaviour.honour_range and header.startswith("bytes="):
            start = int(header[len("bytes=") :].split("-")[0])
            if start >= len(data):
                self._send(416, {"Content-Range": f"bytes */{len(data)}"}, b"")
                return
            status = 206
            extra = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
        else:
            status, extra = 200, {}
        body = data[start:]
        headers = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream", **extra}
        cut = self.behaviour.drop_after.pop(path, None)
        if cut is not None:
            self.send_response(status)
            for key, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self._send(status, headers, body)

    def _answer_route(self, method: str) -> bool:
        route = self.behaviour.routes.get((method, self.path.split("?")[0]))
        if route is None:
            return False
        self._send(*route)
        return True

    def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class LocalServer:
    def __init__(self) -> None:
        self.behaviour = Behaviour()
        handler = type("Handler", (_Handler,), {"behaviour": self.behaviour})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        # A short poll interval: stopping the server waits up to one.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def root(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.root + path

    def __enter__(self) -> LocalServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.behaviour.closing.set()
        self._server.shutdown()
        self._server.server_close()

import gzip
import hashlib
import os
import re
import socket
import time
from dataclasses import replace

import pytest

from imgpipe import addresses
from imgpipe.fetch import fetch, part_path
from imgpipe.fetch_errors import ChecksumMismatch, FetchError
from imgpipe.fetch_settings import FetchSettings
from imgpipe.redact import redact_text, redact_url
from tests.archive_makers import make_tar

DATA = os.urandom(300_000)
SHA = hashlib.sha256(DATA).hexdigest()
FAST = FetchSettings(connect_timeout=5, read_timeout=5, retries=2, backoff=0)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fetch(server, tmp_path, sha256=SHA, settings=FAST):
    return fetch(
        server.url("/data.bin"), tmp_path / "data.bin", sha256, settings, sleep=lambda s: None
    )


def test_download_is_verified_and_renamed_into_place(server, tmp_path):
    server.behaviour.files["/data.bin"] = DATA
    fetched = _fetch(server, tmp_path)
    assert fetched.path.read_bytes() == DATA
    assert (fetched.sha256, fetched.size) == (SHA, len(DATA))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin"]


def test_checksum_mismatch_is_an_error_and_leaves_nothing(server, tmp_path):
    server.behaviour.files["/data.bin"] = DATA[:-1] + b"X"
    with pytest.raises(ChecksumMismatch, match=rf"sha256 is [0-9a-f]{{64}}, expected {SHA}"):
        _fetch(server, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_connection_dropped_halfway_resumes_with_range(server, tmp_path):
    server.behaviour.files["/data.bin"] = DATA
    server.behaviour.drop_after["/data.bin"] = 120_000
    fetched = _fetch(server, tmp_path)
    assert fetched.path.read_bytes() == DATA
    ranges = [r["headers"].get("Range") for r in server.behaviour.requests]
    assert len(ranges) == 2
    assert ranges[0] is None
    resumed_from = int(ranges[1].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_from <= 120_000


def test_part_file_from_an_earlier_run_is_resumed(server, tmp_path):
    server.behaviour.files["/data.bin"] = DATA
    part_path(tmp_path / "data.bin").write_bytes(DATA[:50_000])
    assert _fetch(server, tmp_path).path.read_bytes() == DATA
    assert server.behaviour.requests[0]["headers"]["Range"] == "bytes=50000-"


def test_complete_part_file_is_verified_without_downloading_again(server, tmp_path):
    server.behaviour.files["/data.bin"] = DATA
    part_path(tmp_path / "data.bin").write_bytes(DATA)
    assert _fetch(server, tmp_path).path.read_bytes() == DATA
    assert len(server.behaviour.requests) == 1  # answered 416: nothing left to send


def test_part_longer_than_the_file_starts_again(server, tmp_path):
    server.behaviour.files["/data.bin"] = DATA
    part_path(tmp_path / "data.bin").write_bytes(DATA + b"extra")
    assert _fetch(server, tmp_path).path.read_bytes() == DATA


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    server.behaviour.files["/data.bin"] = DATA
    server.behaviour.honour_range = False
    server.behaviour.drop_after["/data.bin"] = 100_000
    fetched = _fetch(server, tmp_path)
    # Appending the whole file after the first 100 kB would give a longer, wrong file.
    assert fetched.path.read_bytes() == DATA
    assert server.behaviour.requests[1]["headers"]["Range"].startswith("bytes=")


def test_verified_file_is_reused_without_traffic(server, tmp_path):
    (tmp_path / "data.bin").write_bytes(DATA)
    assert _fetch(server, tmp_path).sha256 == SHA
    assert server.behaviour.requests == []


def test_stale_file_with_wrong_bytes_is_fetched_again(server, tmp_path):
    server.behaviour.files["/data.bin"] = DATA
    (tmp_path / "data.bin").write_bytes(b"old")
    assert _fetch(server, tmp_path).path.read_bytes() == DATA


def test_missing_file_says_check_the_url(server, tmp_path):
    with pytest.raises(FetchError, match=r"HTTP 404.*Check the URL"):
        _fetch(server, tmp_path)


def test_retries_run_out_with_a_message_and_keep_the_part(server, tmp_path):
    server.behaviour.files["/data.bin"] = DATA
    server.behaviour.routes[("GET", "/data.bin")] = (503, {}, b"busy")
    with pytest.raises(FetchError, match=r"failed after 2 retries.*resumes"):
        _fetch(server, tmp_path)
    assert len(server.behaviour.requests) == 3


def test_unreachable_server_is_retried_then_reported(tmp_path):
    with pytest.raises(FetchError, match=r"failed after 1 retries"):
        fetch(
            "http://127.0.0.1:9/none",
            tmp_path / "x",
            None,
            FetchSettings(connect_timeout=1, read_timeout=1, retries=1, backoff=0),
            sleep=lambda s: None,
        )


def test_redacted_url_hides_userinfo_and_secret_query_values():
    url = "https://bob:p%40ss@host.example/a.zip?api_key=K1&token=T2&sig=S3&page=4"
    assert redact_url(url) == "https://***@host.example/a.zip?api_key=***&token=***&sig=***&page=4"
    assert redact_url("https://host.example/a.zip") == "https://host.example/a.zip"
    assert redact_url(None) is None
    text = "failed for /a.zip?api_key=K1 as bob with p@ss"
    assert redact_text(text, url) == "failed for /a.zip?api_key=*** as *** with ***"


def test_retry_errors_never_show_the_credentials(tmp_path):
    url = "http://carol:s3cret@127.0.0.1:9/none?access_token=t0ken"
    with pytest.raises(FetchError, match=r"failed after 1 retries") as raised:
        fetch(
            url,
            tmp_path / "x",
            None,
            FetchSettings(connect_timeout=1, read_timeout=1, retries=1, backoff=0),
            sleep=lambda s: None,
        )
    assert "s3cret" not in str(raised.value) and "t0ken" not in str(raised.value)


# --- hostile and broken servers --------------------------------------------------------------


def _fetch_path(server, tmp_path, path, sha256=None, **settings):
    return fetch(
        server.url(path),
        tmp_path / "out.bin",
        sha256,
        replace(FAST, **settings),
        sleep=lambda s: None,
    )


def _drip(interval, length=10_000):
    """A handler announcing ``length`` bytes, then sending one byte per ``interval`` s."""

    def handle(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", str(length))
        handler.end_headers()
        for _ in range(length):
            if handler.behaviour.closing.wait(interval):
                return
            handler.wfile.write(b"x")
            handler.wfile.flush()

    return handle


def _slow_headers(handler):
    handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
    while not handler.behaviour.closing.wait(0.05):
        handler.wfile.write(b"X-Drip: 1\r\n")
        handler.wfile.flush()


def _silent_after(count):
    def handle(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        handler.wfile.write(b"x" * count)
        handler.wfile.flush()
        handler.behaviour.closing.wait(5)

    return handle


@pytest.mark.parametrize(
    "handler,settings,expected,limit",
    [
        # 1 byte/s never trips a read timeout: only the rate floor or the deadline stop it.
        (
            _drip(1.0),
            {"min_rate": 1024, "rate_window": 1},
            r"only \d bytes/s over the last 1 s, below download.min_rate_kbps \(1 KB/s = 1024 "
            r"bytes/s\).*lower download.min_rate_kbps \(0 turns the floor off\).*resumes",
            2.0,
        ),
        (
            _drip(1.0),
            {"min_rate": 0, "deadline": 1.5},
            r"did not finish within download.deadline \(1.5 s\)\. Raise download.deadline",
            2.5,
        ),
        (
            _slow_headers,
            {"connect_timeout": 0.3, "read_timeout": 0.3},
            r"did not finish sending its response headers within 0.6 s.*download.timeout",
            1.5,
        ),
        # seconds without data: download.timeout, retried, then reported
        (
            _silent_after(10),
            {"read_timeout": 0.3, "retries": 1},
            r"failed after 1 retries: no data for 0.3 s\. The server stopped sending.*raise "
            r"download.timeout",
            1.5,
        ),
    ],
    ids=["rate floor", "deadline", "dripped headers", "silence"],
)
def test_stalling_servers_are_given_up_on_in_time(
    server, tmp_path, handler, settings, expected, limit
):
    server.behaviour.handlers["/slow"] = handler
    started = time.monotonic()
    with pytest.raises(FetchError, match=expected) as raised:
        _fetch_path(server, tmp_path, "/slow?token=T0KEN", **settings)
    assert time.monotonic() - started < limit
    assert server.url("/slow?token=***") in str(raised.value)
    assert "T0KEN" not in str(raised.value)


def test_a_body_shorter_than_announced_is_retried_then_reported(server, tmp_path):
    def lie(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(DATA) + 1000))
        handler.end_headers()
        handler.wfile.write(DATA)
        handler.close_connection = True

    server.behaviour.handlers["/lie"] = lie
    with pytest.raises(FetchError) as raised:
        _fetch_path(server, tmp_path, "/lie", retries=1)
    assert re.search(
        rf"failed after 1 retries: the connection broke after {len(DATA)} of the "
        rf"{len(DATA) + 1000} bytes announced.*sends less than it announces",
        str(raised.value),
    )
    assert len(server.behaviour.requests) == 2


def _gzip_bomb(megabytes: int) -> bytes:
    """``megabytes`` MiB of zeros as concatenated gzip members: about 1 kB per MiB sent."""
    return gzip.compress(bytes(1 << 20), mtime=0) * megabytes


def test_content_encoding_is_never_decoded_so_a_bomb_stays_its_size(server, tmp_path):
    bomb = _gzip_bomb(3000)  # ~3 MB sent, ~3 GiB if decoded
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/octet-stream"}
    server.behaviour.routes[("GET", "/bomb")] = (200, headers, bomb)
    with pytest.raises(ChecksumMismatch, match=r"Content-Encoding: gzip although asked not to"):
        _fetch_path(server, tmp_path, "/bomb", sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []
    assert server.behaviour.requests[0]["headers"]["Accept-Encoding"] == "identity"
    # The bytes kept and hashed are the bytes sent: a .tar.gz that a misconfigured server
    # labels Content-Encoding: gzip (as Apache's AddEncoding does) verifies and stays a .tar.gz.
    archive = make_tar({"cat/a.png": b"x" * 5000})
    server.behaviour.routes[("GET", "/data.tar.gz")] = (200, headers, archive)
    fetched = _fetch_path(server, tmp_path, "/data.tar.gz", sha256=sha(archive))
    assert fetched.path.read_bytes() == archive


def test_redirects_between_local_addresses_are_followed_with_credentials_kept_per_host(
    server, tmp_path
):
    server.behaviour.files["/data.bin"] = DATA
    server.behaviour.routes[("GET", "/old")] = (301, {"Location": "/data.bin"}, b"")
    port = server.url("").rsplit(":", 1)[1]
    elsewhere = f"http://localhost:{port}/data.bin"
    server.behaviour.routes[("GET", "/moved")] = (302, {"Location": elsewhere}, b"")
    url = server.url("/old").replace("http://", "http://me:pw@")
    assert fetch(url, tmp_path / "a.bin", SHA, FAST).path.read_bytes() == DATA
    url = server.url("/moved").replace("http://", "http://me:pw@")
    assert fetch(url, tmp_path / "b.bin", SHA, FAST).path.read_bytes() == DATA
    auth = [r["headers"].get("Authorization") for r in server.behaviour.requests]
    assert auth[:2] == [auth[0], auth[0]] and auth[0].startswith("Basic ")
    assert auth[2:] == [auth[0], None]  # another host: the credentials stay behind


@pytest.fixture
def connections(monkeypatch):
    """Every address a connection is attempted to."""
    import urllib3.util.connection

    attempts = []
    real = urllib3.util.connection.create_connection

    def recording(address, *args, **kwargs):
        attempts.append(address[0])
        return real(address, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", recording)
    return attempts


@pytest.mark.parametrize(
    "location,expected",
    [
        (
            "file:///etc/passwd",
            r"redirect to file:///etc/passwd: it is file://, and a download reads only http:// "
            "and https://",
        ),
        (
            "http://169.254.169.254/latest/meta-data/",
            r"redirect to http://169.254.169.254/latest/meta-data/: 169.254.169.254 is a cloud "
            "metadata address; a download never",
        ),
        ("http://[::ffff:169.254.169.254]/", r"is a cloud metadata address"),
        # 169.254.169.254 as one number: the check sees what the connection would reach
        ("http://2852039166/", r"2852039166 resolves to 169.254.169.254, which is a cloud"),
        ("//169.254.169.254/", r"redirect to http://169.254.169.254/: "),
        ("http://[::1", r"redirects to 'http://\[::1', which is not a valid address"),
        ("http://[fe80::1]/", r"fe80::1 is a link-local address"),
        (
            "http://metadata.test/computeMetadata/v1/",
            r"metadata.test resolves to 169.254.169.254, which is a cloud metadata address",
        ),
        (
            "http://intranet.test/?sig=S1",
            r"redirect to http://intranet.test/\?sig=\*\*\*: intranet.test resolves to "
            r"10.1.2.3, which is a private address, and the URL given was on a public one",
        ),
    ],
)
def test_redirects_are_refused_before_any_connection_to_them(
    server, tmp_path, monkeypatch, connections, location, expected
):
    names = {"metadata.test": ["169.254.169.254"], "intranet.test": ["10.1.2.3"]}
    names["public.test"] = ["93.184.216.34"]

    def resolve(host, port):  # the test names, or numbers only: never a DNS query
        if host in names:
            return names[host]
        infos = socket.getaddrinfo(host, port, flags=socket.AI_NUMERICHOST)
        return sorted({info[4][0] for info in infos})

    monkeypatch.setattr(addresses, "resolve", resolve)
    monkeypatch.setattr(socket, "getaddrinfo", _only_loopback(socket.getaddrinfo))
    server.behaviour.routes[("GET", "/r")] = (302, {"Location": location}, b"")
    # For the private address, the URL given must look public: a name that resolves so.
    url = server.url("/r")
    if "intranet" in location:
        url = url.replace("127.0.0.1", "public.test")
    with pytest.raises(FetchError, match=expected) as raised:
        fetch(url, tmp_path / "x", None, FAST, sleep=lambda s: None)
    assert "S1" not in str(raised.value)
    assert [r["path"] for r in server.behaviour.requests] == ["/r"]
    assert set(connections) <= {"127.0.0.1", "public.test"}


def _only_loopback(real):
    """getaddrinfo for the connections: every test name is this machine."""

    def getaddrinfo(host, port, *args, **kwargs):
        return real("127.0.0.1" if host.endswith(".test") else host, port, *args, **kwargs)

    return getaddrinfo


def test_a_name_that_resolves_differently_when_connecting_is_refused_before_any_request(
    server, tmp_path, monkeypatch
):
    # The check sees a public address, the connection reaches 127.0.0.1 (DNS rebinding).
    monkeypatch.setattr(addresses, "resolve", lambda host, port: ["93.184.216.34"])
    monkeypatch.setattr(socket, "getaddrinfo", _only_loopback(socket.getaddrinfo))
    port = server.url("").rsplit(":", 1)[1]
    redirect = {"Location": f"http://rebind.test:{port}/data.bin"}
    server.behaviour.routes[("GET", "/r")] = (302, redirect, b"")
    server.behaviour.files["/data.bin"] = DATA
    expected = r"refused to connect, because the connection reached 127.0.0.1, which is a loopback"
    with pytest.raises(FetchError, match=expected):
        fetch(f"http://public.test:{port}/r", tmp_path / "x", SHA, FAST)
    assert [r["path"] for r in server.behaviour.requests] == ["/r"]


def test_a_redirect_loop_is_a_message(server, tmp_path):
    server.behaviour.routes[("GET", "/loop")] = (302, {"Location": "/loop?sig=S"}, b"")
    expected = (
        r"more than 10 redirects \(the last to http://127.0.0.1:\d+/loop\?sig=\*\*\*\); "
        "the server redirects in a loop"
    )
    with pytest.raises(FetchError, match=expected):
        _fetch_path(server, tmp_path, "/loop")
    assert len(server.behaviour.requests) == 11


@pytest.mark.parametrize(
    "url,expected",
    [
        ("ftp://127.0.0.1/x", r"cannot download ftp://127.0.0.1/x: it is ftp://"),
        ("http://169.254.169.254/x", r"169.254.169.254 is a cloud metadata address"),
        (
            "http://no-such-host.test/x?key=K",
            r"downloading http://no-such-host.test/x\?key=\*\*\*: the host name "
            "'no-such-host.test' does not resolve.*Check the host name",
        ),
        ("not a url", r"it is no scheme"),
    ],
)
def test_bad_urls_are_messages(tmp_path, monkeypatch, connections, url, expected):
    def no_such_host(host, port):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(addresses, "resolve", no_such_host)
    with pytest.raises(FetchError, match=expected) as raised:
        fetch(url, tmp_path / "x", None, FAST, sleep=lambda s: None)
    assert "K" not in str(raised.value).split("?")[-1]
    assert connections == []


def test_tls_failure_is_a_message_and_not_retried(server, tmp_path):
    server.behaviour.files["/data.bin"] = DATA
    url = server.url("/data.bin").replace("http://", "https://")
    expected = r"https://127.0.0.1:\d+/data.bin: the TLS \(https\) connection failed: .*CA_BUNDLE"
    with pytest.raises(FetchError, match=expected):
        fetch(url, tmp_path / "x", SHA, FAST, sleep=lambda s: None)


def test_text_from_network_libraries_loses_every_credential():
    text = (
        "HTTPSConnectionPool(host='h', port=443): Max retries exceeded with url: "
        "/a.zip?X-Amz-Signature=abc123&X-Amz-Credential=AKIA&part=2 (Caused by "
        "https://u:secretpw@mirror.example/b?access_token=T0K#id_token=jwt1)"
    )
    cleaned = redact_text(text)
    for secret in ("abc123", "AKIA", "secretpw", "T0K", "jwt1"):
        assert secret not in cleaned
    assert "part=2" in cleaned and "https://***@mirror.example/b?access_token=***" in cleaned
    assert redact_url("http://[::1/x?token=t") == "http://[::1/x?token=***"

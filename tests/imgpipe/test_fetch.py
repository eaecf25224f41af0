import hashlib
import os

import pytest

from imgpipe.fetch import (
    ChecksumMismatch,
    FetchError,
    FetchSettings,
    fetch,
    part_path,
    redact_text,
    redact_url,
)

DATA = os.urandom(300_000)
SHA = hashlib.sha256(DATA).hexdigest()
FAST = FetchSettings(connect_timeout=5, read_timeout=5, retries=2, backoff=0)


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

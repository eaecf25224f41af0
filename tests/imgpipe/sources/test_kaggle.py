"""The kaggle source: credentials, download through the kaggle package, clear errors."""

import base64
import json
import logging

import pytest

from imgpipe.errors import StageError
from imgpipe.params import parse_params
from imgpipe.sources.kaggle import (
    KaggleError,
    KaggleRef,
    _explain,
    config_dir,
    credential_source,
)
from stages import download
from tests.archive_makers import make_zip
from tests.conftest import layout_of
from tests.imgpipe.sources.helpers import png, run_pipeline

USER, KEY = "imgpipe-test-user", "0123456789abcdef-secret-key-4242"
DOWNLOAD_ROUTE = ("POST", "/v1/competitions.CompetitionApiService/DownloadDataFile")


@pytest.fixture
def no_kaggle_credentials(tmp_path, monkeypatch):
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_API_V1_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kaggle-config"))
    (tmp_path / "kaggle-config").mkdir()
    return tmp_path / "kaggle-config"


@pytest.fixture
def kaggle_server(server, no_kaggle_credentials, monkeypatch):
    """Kaggle's API answered by the local server: the kaggle package is pointed at it."""
    from kagglesdk.kaggle_env import KaggleEnv, _env_to_endpoint

    monkeypatch.setitem(_env_to_endpoint, KaggleEnv.PROD, server.root)
    members = {
        f"train/{name}.{i}.png": png(k, i)
        for k, name in enumerate(["cat", "dog"])
        for i in range(15)
    }
    server.behaviour.files["/files/train.zip"] = make_zip(members)
    server.behaviour.routes[DOWNLOAD_ROUTE] = (
        302,
        {"Location": server.url("/files/train.zip")},
        b"",
    )
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    return server


def test_kaggle_without_credentials_says_exactly_what_to_set(no_kaggle_credentials, tmp_path):
    params = parse_params({"download": {"source": "kaggle"}}).download
    assert (params.competition, params.file) == ("dogs-vs-cats", "train.zip")
    with pytest.raises(StageError) as err:
        download.run(params, layout_of(tmp_path, raw=tmp_path / "raw", downloads=tmp_path / "dl"))
    message = str(err.value)
    assert "KAGGLE_USERNAME and KAGGLE_KEY" in message
    assert str(no_kaggle_credentials / "kaggle.json") in message
    assert "never from params.yaml" in message
    assert "~/.kaggle/kaggle.json" in message and "~/.config/kaggle/kaggle.json" in message
    assert not (tmp_path / "raw").exists()
    (no_kaggle_credentials / "kaggle.json").write_text('{"username": "me"}')
    with pytest.raises(StageError, match='does not hold a "username" and a "key"'):
        download.run(params, layout_of(tmp_path, raw=tmp_path / "raw", downloads=tmp_path / "dl"))


def test_kaggle_download_uses_credentials_and_never_shows_them(
    kaggle_server, tmp_path, capfd, caplog
):
    caplog.set_level(logging.DEBUG)
    params = parse_params({"download": {"source": "kaggle"}}).download
    source = download.run(
        params, layout_of(tmp_path, raw=tmp_path / "raw", downloads=tmp_path / "dl")
    )
    assert source["kind"] == "kaggle"
    assert source["url"] == "https://www.kaggle.com/competitions/dogs-vs-cats"
    assert source["counts"] == {"cat": 15, "dog": 15}
    assert (tmp_path / "raw" / "train.zip").read_bytes() == kaggle_server.behaviour.files[
        "/files/train.zip"
    ]
    post = kaggle_server.behaviour.requests[0]
    assert json.loads(post["body"]) == {"competitionName": "dogs-vs-cats", "fileName": "train.zip"}
    expected_auth = "Basic " + base64.b64encode(f"{USER}:{KEY}".encode()).decode()
    assert post["headers"]["Authorization"] == expected_auth
    out, err = capfd.readouterr()
    written = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    for text in (out, err, caplog.text, json.dumps(source)):
        assert KEY not in text
    assert KEY.encode() not in written
    assert "credentials from environment" in caplog.text


def test_kaggle_unaccepted_rules_say_where_to_accept_them(kaggle_server, tmp_path):
    body = json.dumps({"code": 403, "message": "You must accept this competition's rules"})
    kaggle_server.behaviour.routes[DOWNLOAD_ROUTE] = (
        403,
        {"Content-Type": "application/json"},
        body.encode(),
    )
    params = parse_params({"download": {"source": "kaggle"}}).download
    with pytest.raises(StageError) as err:
        download.run(params, layout_of(tmp_path, raw=tmp_path / "raw", downloads=tmp_path / "dl"))
    assert "https://www.kaggle.com/competitions/dogs-vs-cats/rules" in str(err.value)
    assert "I Understand and Accept" in str(err.value)
    assert KEY not in str(err.value)
    assert not (tmp_path / "raw").exists()


def test_kaggle_source_to_a_trained_model(kaggle_server, tmp_path):
    params = parse_params({"download": {"source": "kaggle"}}).download
    download.run(params, layout_of(tmp_path, raw=tmp_path / "raw", downloads=tmp_path / "dl"))
    run_pipeline(tmp_path / "raw", tmp_path, ["cat", "dog"])


# --- credentials and errors --------------------------------------------------------------


class _Response:
    def __init__(self, status):
        self.status_code = status


class _HTTPError(Exception):
    def __init__(self, status):
        super().__init__(f"HTTP {status}")
        self.response = _Response(status)


def test_config_dir_follows_the_package_order(tmp_path):
    assert config_dir({"KAGGLE_CONFIG_DIR": "/x"}).as_posix() == "/x"
    (tmp_path / ".kaggle").mkdir()
    assert config_dir({"HOME": str(tmp_path)}) == tmp_path / ".kaggle"


def test_credentials_from_environment_or_file_never_return_the_secret(tmp_path):
    env = {"KAGGLE_USERNAME": "me", "KAGGLE_KEY": "s3cret", "KAGGLE_CONFIG_DIR": str(tmp_path)}
    assert credential_source(env) == "environment"
    (tmp_path / "kaggle.json").write_text(json.dumps({"username": "me", "key": "s3cret"}))
    found = credential_source({"KAGGLE_CONFIG_DIR": str(tmp_path)})
    assert found == str(tmp_path / "kaggle.json")
    assert "s3cret" not in found


def test_no_credentials_names_both_ways_to_provide_them(tmp_path):
    with pytest.raises(KaggleError) as err:
        credential_source({"KAGGLE_CONFIG_DIR": str(tmp_path)})
    assert "KAGGLE_USERNAME and KAGGLE_KEY" in str(err.value)
    assert str(tmp_path / "kaggle.json") in str(err.value)


@pytest.mark.parametrize(
    "status,expected",
    [
        (401, "rejected the credentials"),
        (403, "dogs-vs-cats/rules"),
        (404, "no file 'train.zip' of competition"),
        (500, "failed"),
    ],
)
def test_http_errors_become_instructions(status, expected):
    ref = KaggleRef("dogs-vs-cats", None, "train.zip")
    assert expected in str(_explain(_HTTPError(status), ref))


def test_dataset_urls_and_folder_names():
    ref = KaggleRef(None, "owner/pets", None)
    assert ref.url == "https://www.kaggle.com/datasets/owner/pets"
    assert ref.folder_name == "owner__pets"


def test_kaggle_unreachable_is_a_message_without_the_signed_url(kaggle_server, tmp_path):
    signed = "http://127.0.0.1:9/files/train.zip?X-Goog-Signature=S1GNED&X-Goog-Credential=C"
    kaggle_server.behaviour.routes[DOWNLOAD_ROUTE] = (302, {"Location": signed}, b"")
    params = parse_params({"download": {"source": "kaggle"}}).download
    expected = r"cannot reach Kaggle to download the competition 'dogs-vs-cats'.*needs the internet"
    with pytest.raises(StageError, match=expected) as err:
        download.run(params, layout_of(tmp_path, raw=tmp_path / "raw", downloads=tmp_path / "dl"))
    assert "S1GNED" not in str(err.value) and KEY not in str(err.value)

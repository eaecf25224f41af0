import json

import pytest

from imgpipe.kaggle_source import KaggleError, KaggleRef, _explain, config_dir, credential_source


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

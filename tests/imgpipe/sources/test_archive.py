"""The archive source: a verified archive kept as it is and read member by member."""

import json
import os
from pathlib import Path

import pytest

from imgpipe.archives import UnsafeArchive
from imgpipe.errors import RawDataError, StageError
from imgpipe.fetch import ChecksumMismatch
from imgpipe.params import PrepareParams
from imgpipe.raw import list_items
from stages import download, prepare
from tests.archive_makers import make_tar, make_zip, tar_with, zip_with
from tests.conftest import layout_of
from tests.imgpipe.sources.helpers import dl_params, files_under, png, run_pipeline, sha

PETS = {
    f"pets/{name}/{i:02d}.png": png(k, i)
    for k, name in enumerate(["cat", "dog"])
    for i in range(12)
}


def test_local_archive_path_is_recorded_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("pets.zip").write_bytes(make_zip(PETS))
    params = dl_params(source="archive", path="pets.zip", sha256=sha(make_zip(PETS)))
    download.run(params, layout_of(tmp_path, raw=tmp_path / "raw"))
    recorded = (tmp_path / "raw" / "source.json").read_bytes()
    assert str(tmp_path).encode() not in recorded
    assert json.loads(recorded)["path"] == "pets.zip"


def test_archive_from_url_is_kept_as_is_and_read_by_member(server, tmp_path):
    data = make_zip({**PETS, "pets/README.txt": b"hello", "__MACOSX/pets/._x.png": b"x"})
    server.behaviour.files["/pets.zip"] = data
    params = dl_params(source="archive", url=server.url("/pets.zip"), sha256=sha(data))
    source = download.run(
        params, layout_of(tmp_path, raw=tmp_path / "raw", downloads=tmp_path / "dl")
    )
    assert files_under(tmp_path / "raw") == ["pets.zip", "source.json"]
    assert (tmp_path / "raw" / "pets.zip").read_bytes() == data
    assert source["sha256"] == sha(data)
    assert source["url"] == server.url("/pets.zip")
    assert source["counts"] == {"cat": 12, "dog": 12}
    assert [s["path"] for s in source["skipped"]] == ["__MACOSX/pets/._x.png", "pets/README.txt"]
    items, classes = list_items(tmp_path / "raw")
    assert classes == ["cat", "dog"]
    assert items[0].origin == "pets.zip/pets/cat/00.png"
    assert items[0].read() == PETS["pets/cat/00.png"]
    # A second run reuses the verified download: no more traffic.
    before = len(server.behaviour.requests)
    download.run(params, layout_of(tmp_path, raw=tmp_path / "raw", downloads=tmp_path / "dl"))
    assert len(server.behaviour.requests) == before


def test_archive_with_labels_in_file_names(tmp_path):
    members = {
        f"train/{name}.{i}.png": png(k, i)
        for k, name in enumerate(["cat", "dog"])
        for i in range(3)
    }
    path = tmp_path / "train.tar.gz"
    path.write_bytes(make_tar(members))
    params = dl_params(
        source="archive",
        path=str(path),
        sha256=sha(path.read_bytes()),
        label_pattern=r"^(cat|dog)\.",
    )
    source = download.run(params, layout_of(tmp_path, raw=tmp_path / "raw"))
    assert source["format"] == "tar.gz"
    # The user's own archive is copied, never hard-linked into DVC's hands.
    assert (tmp_path / "raw" / "train.tar.gz").stat().st_ino != path.stat().st_ino
    assert source["counts"] == {"cat": 3, "dog": 3}
    items, _ = list_items(tmp_path / "raw")
    assert items[-1].origin == "train.tar.gz/train/dog.2.png"
    assert items[-1].read() == members["train/dog.2.png"]


def test_archive_empty_class_folder_is_counted_and_prepare_names_it(tmp_path):
    # notes.txt is a candidate like any member of a class folder: prepare finds it no image.
    members = {**PETS, "pets/bird/notes.txt": b"no birds yet", "pets/fish/": b""}
    path = tmp_path / "pets.zip"
    path.write_bytes(make_zip(members))
    params = dl_params(source="archive", path=str(path), sha256=sha(path.read_bytes()))
    source = download.run(params, layout_of(tmp_path, raw=tmp_path / "raw"))
    assert source["counts"] == {"bird": 1, "cat": 12, "dog": 12, "fish": 0}
    with pytest.raises(StageError, match=r"'bird' has 0"):
        prepare.run(
            PrepareParams(size=(16, 16), workers=1, min_per_class=2),
            layout_of(tmp_path, raw=tmp_path / "raw", prepared=tmp_path / "prepared"),
        )


def test_credentials_in_the_url_are_never_recorded_nor_shown(server, tmp_path):
    data = make_zip(PETS)
    server.behaviour.files["/pets.zip"] = data
    url = server.url("/pets.zip?X-Amz-Signature=s1gn3d&part=1").replace(
        "http://", "http://alice:hunter2@"
    )
    params = dl_params(source="archive", url=url, sha256=sha(data))
    download.run(params, layout_of(tmp_path, raw=tmp_path / "raw", downloads=tmp_path / "dl"))
    recorded = (tmp_path / "raw" / "source.json").read_text()
    assert "hunter2" not in recorded and "s1gn3d" not in recorded and "alice" not in recorded
    assert "X-Amz-Signature=***&part=1" in json.loads(recorded)["url"]
    missing = dl_params(source="archive", url=url.replace("pets.zip", "nope.zip"), sha256=sha(data))
    with pytest.raises(StageError, match="HTTP 404") as raised:
        download.run(missing, layout_of(tmp_path, raw=tmp_path / "raw2", downloads=tmp_path / "dl"))
    assert "hunter2" not in str(raised.value) and "s1gn3d" not in str(raised.value)


def test_corrupted_download_is_a_clear_error_and_leaves_no_output(server, tmp_path):
    data = make_zip(PETS)
    server.behaviour.files["/pets.zip"] = data[:-10] + b"0123456789"
    params = dl_params(source="archive", url=server.url("/pets.zip"), sha256=sha(data))
    with pytest.raises(ChecksumMismatch, match=f"expected {sha(data)}"):
        download.run(params, layout_of(tmp_path, raw=tmp_path / "raw", downloads=tmp_path / "dl"))
    assert files_under(tmp_path) == ["dl"]


def test_connection_dropped_halfway_resumes(server, tmp_path):
    data = make_zip({**PETS, "pets/padding.bin": os.urandom(400_000)})
    server.behaviour.files["/pets.zip"] = data
    server.behaviour.drop_after["/pets.zip"] = len(data) // 2
    params = dl_params(source="archive", url=server.url("/pets.zip"), sha256=sha(data), retries=2)
    download.run(params, layout_of(tmp_path, raw=tmp_path / "raw", downloads=tmp_path / "dl"))
    assert (tmp_path / "raw" / "pets.zip").read_bytes() == data
    assert len(server.behaviour.requests) == 2
    resumed_from = int(server.behaviour.requests[1]["headers"]["Range"][6:-1])
    assert 0 < resumed_from <= len(data) // 2


@pytest.mark.parametrize("maker", [tar_with, zip_with], ids=["tar.gz", "zip"])
@pytest.mark.parametrize("kind", ["traversal", "absolute", "symlink", "device"])
def test_malicious_archive_is_refused_and_nothing_is_written(server, tmp_path, maker, kind):
    work = tmp_path / "project"
    (work / "data").mkdir(parents=True)
    outside = tmp_path / "outside-evil.png"
    data = maker(kind, absolute=str(outside))
    server.behaviour.files["/evil"] = data
    params = dl_params(source="archive", url=server.url("/evil"), sha256=sha(data))
    with pytest.raises(UnsafeArchive):
        download.run(params, layout_of(tmp_path, raw=work / "data" / "raw", downloads=work / "dl"))
    assert not (work / "data" / "raw").exists()
    assert not outside.exists()
    assert not any("evil" in p.name and p.suffix == ".png" for p in tmp_path.rglob("*"))
    assert files_under(work) == ["data", "dl", "dl/evil"]


def test_archive_source_to_a_trained_model(server, tmp_path):
    members = {
        f"shapes/{name}/{i:02d}.png": png(k, i) for k, name in enumerate("abc") for i in range(15)
    }
    data = make_tar(members)
    server.behaviour.files["/shapes.tar.gz"] = data
    params = dl_params(source="archive", url=server.url("/shapes.tar.gz"), sha256=sha(data))
    download.run(params, layout_of(tmp_path, raw=tmp_path / "raw", downloads=tmp_path / "dl"))
    run_pipeline(tmp_path / "raw", tmp_path, ["a", "b", "c"])


def test_archive_members_are_read_directly(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    source = {"kind": "archive", "layout": "archive", "archive": "a.zip"}
    (raw / "source.json").write_text(json.dumps({**source, "labels": {"image_names_only": True}}))
    (raw / "a.zip").write_bytes(make_zip({"x/cat/1.png": b"one", "x/dog/2.png": b"two"}))
    items, classes = list_items(raw)
    assert classes == ["cat", "dog"]
    assert [(i.origin, i.read()) for i in items] == [
        ("a.zip/x/cat/1.png", b"one"),
        ("a.zip/x/dog/2.png", b"two"),
    ]
    (raw / "a.zip").unlink()
    with pytest.raises(RawDataError, match="dvc repro -f download"):
        list_items(raw)


def test_an_archive_path_that_is_a_folder_says_to_use_the_folder_source(tmp_path):
    (tmp_path / "pets" / "cat").mkdir(parents=True)
    params = dl_params(source="archive", path=str(tmp_path / "pets"), sha256="0" * 64)
    with pytest.raises(StageError, match=r"is a folder, not an archive: .*`source: folder`"):
        download.run(params, layout_of(tmp_path, raw=tmp_path / "raw"))

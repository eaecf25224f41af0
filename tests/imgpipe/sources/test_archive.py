"""The archive source: a verified archive kept as it is and read member by member."""

import json
import os
from pathlib import Path

import pytest

from imgpipe.archive_rules import ArchiveError, UnsafeArchive
from imgpipe.errors import RawDataError, StageError
from imgpipe.fetch_errors import ChecksumMismatch
from imgpipe.params import PrepareParams
from imgpipe.raw import list_items
from imgpipe.sources import archive as archive_source
from stages import download, prepare
from tests.archive_makers import (
    make_tar,
    make_zip,
    overlap_zip,
    tar_with,
    tar_with_size,
    zip_with,
    zip_with_size,
)
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


def test_an_overlapping_zip_bomb_is_refused_by_download(server, tmp_path):
    data = overlap_zip(10, 1_000_000)  # 2 kB declaring 10 MB, well under max_total_gb
    server.behaviour.files["/bomb.zip"] = data
    params = dl_params(source="archive", url=server.url("/bomb.zip"), sha256=sha(data))
    layout = layout_of(tmp_path, raw=tmp_path / "raw", downloads=tmp_path / "dl")
    message = r"bomb.zip: members 'cat/0000.png' and 'cat/0001.png' overlap.*zip bomb"
    with pytest.raises(ArchiveError, match=message):
        download.run(params, layout)
    assert not (tmp_path / "raw").exists()


def test_a_local_archive_replaced_after_download_checked_it_cannot_reach_data_raw(
    tmp_path, monkeypatch
):
    verified, other = make_zip(PETS), make_zip({"pets/cat/x.png": png(0, 0), "pets/dog/y.png": b""})
    user_file = tmp_path / "pets.zip"
    user_file.write_bytes(verified)
    real_inspect = archive_source.inspect_archive

    def replace_then_inspect(*args, **kwargs):
        # After the checksum, before anything else: the moment the file used to be copied.
        (tmp_path / "swap.zip").write_bytes(other)
        os.replace(tmp_path / "swap.zip", user_file)
        return real_inspect(*args, **kwargs)

    monkeypatch.setattr(archive_source, "inspect_archive", replace_then_inspect)
    params = dl_params(source="archive", path=str(user_file), sha256=sha(verified))
    layout = layout_of(tmp_path, raw=tmp_path / "raw", prepared=tmp_path / "prepared")
    source = download.run(params, layout)
    assert (tmp_path / "raw" / "pets.zip").read_bytes() == verified
    assert source["sha256"] == sha(verified) and source["size"] == 24
    assert prepare.run(PrepareParams(size=(8, 8), workers=1), layout)["images"]["kept"] == 24
    # Replaced before the copy: the hash is of what was copied, so the swap is caught.
    user_file.write_bytes(other)
    with pytest.raises(ChecksumMismatch, match=rf"{user_file}: sha256 is {sha(other)}"):
        download.run(params, layout_of(tmp_path, raw=tmp_path / "raw2"))
    assert not (tmp_path / "raw2").exists()


def _raw_archive(tmp_path, name, data, **limits):
    raw = tmp_path / "raw"
    raw.mkdir(exist_ok=True)
    (raw / name).write_bytes(data)
    record = {"kind": "archive", "layout": "archive", "archive": name, "labels": {}}
    (raw / "source.json").write_text(json.dumps({**record, "limits": limits}))
    return layout_of(tmp_path, raw=raw, prepared=tmp_path / "prepared")


@pytest.mark.parametrize("suffix", ["zip", "tar.gz"])
def test_prepare_rejects_a_member_over_the_limit_and_reads_odd_names(tmp_path, suffix):
    members = {**PETS, "pets/cat/./dot.png": png(0, 50), "pets/dog//huge.png": bytes(300_000)}
    data = make_zip(members) if suffix == "zip" else make_tar(members)
    layout = _raw_archive(tmp_path, f"pets.{suffix}", data, max_member_bytes=200_000)
    summary = prepare.run(PrepareParams(size=(8, 8), workers=1), layout)
    assert summary["images"] == {"found": 26, "kept": 25, "rejected": 1, "distinct": 25}
    [rejected] = summary["rejected"]
    assert rejected["path"] == f"pets.{suffix}/pets/dog/huge.png"
    assert rejected["kind"] == "too_large"
    assert (
        "'pets/dog/huge.png' is 293.0 KiB, more than download.max_member_mb" in (rejected["reason"])
    )


@pytest.mark.parametrize(
    "name,data,message",
    [
        ("short.zip", zip_with_size(PETS, "pets/dog/05.png", 100), r"'pets/dog/05.png' cannot be"),
        ("long.zip", zip_with_size(PETS, "pets/dog/05.png", 90_000), r"'pets/dog/05.png' declares"),
        ("size.tar", tar_with_size(PETS, "pets/cat/03.png", 10), r"after member 'pets/cat/03.png'"),
    ],
)
def test_prepare_stops_on_a_damaged_member_naming_it(tmp_path, name, data, message):
    layout = _raw_archive(tmp_path, name, data)
    with pytest.raises(ArchiveError, match=rf"{name}: .*{message}"):
        prepare.run(PrepareParams(size=(8, 8), workers=1), layout)
    assert not (tmp_path / "prepared").exists()

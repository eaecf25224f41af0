import base64
import hashlib
import io
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgpipe import crawl
from imgpipe.archives import UnsafeArchive
from imgpipe.errors import RawDataError, StageError
from imgpipe.fetch import ChecksumMismatch
from imgpipe.images import decode_png_array
from imgpipe.params import (
    AugmentParams,
    DownloadParams,
    EvaluateParams,
    ParamsError,
    PrepareParams,
    SplitParams,
    TrainParams,
    parse_params,
)
from imgpipe.raw import list_items
from imgpipe.shards import read_images, read_manifest
from stages import augment, download, evaluate, prepare, split, train
from tests.archive_makers import make_cifar, make_tar, make_zip, tar_with, zip_with
from tests.conftest import class_image, layout_of, write_class_folders


def png(label_index: int, sample: int, size=(24, 24)) -> bytes:
    buffer = io.BytesIO()
    class_image(label_index, sample, size).save(buffer, format="PNG")
    return buffer.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run_pipeline(raw, tmp_path, classes, prepare_params=None):
    """Every stage after download, in order, below tmp_path; returns the test metrics."""
    layout = layout_of(tmp_path, raw=raw)
    prepare.run(prepare_params or PrepareParams(size=(16, 16), color="rgb", workers=1), layout)
    split.run(SplitParams(val=0.2, test=0.2), 3, layout)
    augment.run(AugmentParams(per_class=0, workers=1), 3, layout)
    # One epoch is enough to show that this source's data reaches a model and its metrics.
    train.run(TrainParams(epochs=1, batch_size=16, lr=0.003), 3, layout)
    evaluate.run(EvaluateParams(), layout)
    assert (layout.model / "model.keras").stat().st_size > 0
    assert json.loads((layout.model / "classes.json").read_text()) == classes
    metrics = json.loads(layout.metrics.read_text())
    assert set(metrics["per_class"]) == set(classes)
    return metrics


def files_under(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_digits_become_png_files_one_folder_per_class(tmp_path):
    raw = tmp_path / "raw"
    summary = download.run(DownloadParams(source="digits"), raw)
    files = sorted((raw / "images").rglob("*.png"))
    assert len(files) == 1797 == summary["size"]
    assert sorted(p.name for p in (raw / "images").iterdir()) == [str(d) for d in range(10)]
    source = json.loads((raw / "source.json").read_text())
    assert source["class_names"] == [str(d) for d in range(10)]
    assert source["layout"] == "class_folders"
    assert len(source["sha256"]) == 64


def test_digit_pixels_match_scikit_learn(tmp_path):
    from sklearn.datasets import load_digits

    raw = tmp_path / "raw"
    download.run(DownloadParams(), raw)
    digits = load_digits()
    stored = np.asarray(Image.open(raw / "images" / str(digits.target[5]) / "digit-0005.png"))
    assert stored.shape == (8, 8)
    np.testing.assert_array_equal(stored, np.rint(digits.images[5] * 255 / 16).astype(np.uint8))


def test_rerun_replaces_output_and_leaves_no_scratch(tmp_path):
    raw = tmp_path / "raw"
    download.run(DownloadParams(), raw)
    (raw / "stale.txt").write_text("from an older run")
    download.run(DownloadParams(), raw)
    assert not (raw / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


# --- folder ---------------------------------------------------------------------------


def test_folder_source_lists_files_in_place_without_copying(tmp_path):
    photos = write_class_folders(tmp_path / "photos", ["cat", "dog"], per_class=3) / "images"
    (photos / "dog" / ".DS_Store").write_bytes(b"junk")
    (photos / "loose.png").write_bytes(png(0, 9))
    raw = tmp_path / "raw"
    source = download.run(DownloadParams(source="folder", path=str(photos)), raw)
    assert files_under(raw) == ["files.csv", "source.json"]
    assert source["class_names"] == ["cat", "dog"]
    assert source["size"] == 6
    assert source["skipped"] == [
        {"path": "dog/.DS_Store", "reason": "hidden or operating-system file"},
        {"path": "loose.png", "reason": "file is not inside a class folder"},
    ]
    items, classes = list_items(raw)
    assert classes == ["cat", "dog"]
    assert [(i.origin, i.label) for i in items][-1] == ("dog/img-002.png", "dog")
    assert items[-1].read() == (photos / "dog" / "img-002.png").read_bytes()


def test_folder_listing_keeps_odd_file_names(tmp_path):
    photos = write_class_folders(tmp_path / "photos", ["cat", "dog"], per_class=1) / "images"
    odd = 'odd, "quoted" [1] \u00fc\nline.png'
    (photos / "cat" / odd).write_bytes(png(0, 5))
    download.run(DownloadParams(source="folder", path=str(photos)), tmp_path / "raw")
    items, _ = list_items(tmp_path / "raw")
    item = next(i for i in items if i.origin == f"cat/{odd}")
    assert item.read() == png(0, 5)


def test_folder_labels_from_file_names_by_regex(tmp_path):
    photos = tmp_path / "train"
    photos.mkdir()
    for index in range(4):
        (photos / f"cat.{index}.jpg").write_bytes(png(0, index))
        (photos / f"dog.{index}.jpg").write_bytes(png(1, index))
    (photos / "notes.txt").write_text("not a pet")
    params = DownloadParams(source="folder", path=str(photos), label_pattern=r"^(cat|dog)\.")
    source = download.run(params, tmp_path / "raw")
    assert source["class_names"] == ["cat", "dog"]
    assert source["skipped"][0]["path"] == "notes.txt"
    assert "does not match" in source["skipped"][0]["reason"]
    items, _ = list_items(tmp_path / "raw")
    assert {(i.origin, i.label) for i in items} >= {("cat.3.jpg", "cat"), ("dog.0.jpg", "dog")}


def test_file_changed_after_listing_is_refused_with_what_to_run(tmp_path):
    photos = write_class_folders(tmp_path / "photos", ["cat", "dog"], per_class=2) / "images"
    download.run(DownloadParams(source="folder", path=str(photos)), tmp_path / "raw")
    (photos / "cat" / "img-001.png").write_bytes(png(1, 7))
    items, _ = list_items(tmp_path / "raw")
    changed = next(i for i in items if i.origin == "cat/img-001.png")
    with pytest.raises(RawDataError, match=r"changed since download.*dvc repro -f download"):
        changed.read()
    (photos / "cat" / "img-000.png").unlink()
    with pytest.raises(RawDataError, match="cannot be read"):
        items[0].read()


def test_folder_source_errors_say_what_to_do(tmp_path):
    with pytest.raises(ParamsError, match=r"download: .*needs download.path"):
        parse_params({"download": {"source": "folder"}})
    with pytest.raises(StageError, match="is not a folder"):
        download.run(DownloadParams(source="folder", path=str(tmp_path / "nope")), tmp_path / "r")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(png(0, 0))
    with pytest.raises(StageError, match="no images in class sub-folders"):
        download.run(DownloadParams(source="folder", path=str(tmp_path / "flat")), tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_folder_source_to_a_trained_model(tmp_path):
    photos = write_class_folders(tmp_path / "photos", ["a", "b", "c"], per_class=15) / "images"
    download.run(DownloadParams(source="folder", path=str(photos)), tmp_path / "raw")
    run_pipeline(tmp_path / "raw", tmp_path, ["a", "b", "c"])


def test_folder_source_json_is_the_same_in_every_clone(tmp_path, monkeypatch):
    outputs = []
    for clone, spelling in [("one", "photos/images"), ("two", "./photos/images/")]:
        project = tmp_path / clone
        write_class_folders(project / "photos", ["cat", "dog"], per_class=2)
        monkeypatch.chdir(project)
        download.run(DownloadParams(source="folder", path=spelling), project / "data" / "raw")
        outputs.append((project / "data" / "raw" / "source.json").read_bytes())
        assert str(tmp_path).encode() not in outputs[-1]
        items, _ = list_items(project / "data" / "raw")  # read relative to the project
        expected = project / "photos" / "images" / "cat" / "img-000.png"
        assert items[0].read() == expected.read_bytes()
    assert outputs[0] == outputs[1]
    assert json.loads(outputs[0])["path"] == "photos/images"


def test_local_archive_path_is_recorded_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("pets.zip").write_bytes(make_zip(PETS))
    params = DownloadParams(source="archive", path="pets.zip", sha256=sha(make_zip(PETS)))
    download.run(params, tmp_path / "raw")
    recorded = (tmp_path / "raw" / "source.json").read_bytes()
    assert str(tmp_path).encode() not in recorded
    assert json.loads(recorded)["path"] == "pets.zip"


def test_empty_class_folder_is_counted_and_prepare_names_it(tmp_path):
    photos = write_class_folders(tmp_path / "photos", ["cat", "dog"], per_class=4) / "images"
    (photos / "bird").mkdir()
    (photos / "fish").mkdir()
    (photos / "fish" / ".hidden.png").write_bytes(png(0, 1))  # set aside: still no images
    raw = tmp_path / "raw"
    source = download.run(DownloadParams(source="folder", path=str(photos)), raw)
    assert source["class_names"] == ["bird", "cat", "dog", "fish"]
    params = PrepareParams(size=(16, 16), workers=1, min_per_class=2)
    with pytest.raises(StageError, match=r"'bird' has 0, 'fish' has 0"):
        prepare.run(params, layout_of(tmp_path, raw=raw, prepared=tmp_path / "prepared"))


def test_broken_links_and_unreadable_files_are_listed_as_skipped(tmp_path, monkeypatch):
    photos = write_class_folders(tmp_path / "photos", ["cat", "dog"], per_class=2) / "images"
    (photos / "cat" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    os.mkfifo(photos / "dog" / "pipe.png")
    locked = photos / "dog" / "locked.png"
    locked.write_bytes(png(1, 9))
    locked.chmod(0)
    if os.access(locked, os.R_OK):  # root reads anything: make the read fail as it would

        def refuse(path):
            if path.name == "locked.png":
                raise PermissionError(13, "Permission denied", str(path))
            return sha(path.read_bytes())

        monkeypatch.setattr(download, "file_sha256", refuse)
    source = download.run(DownloadParams(source="folder", path=str(photos)), tmp_path / "raw")
    reasons = {entry["path"]: entry["reason"] for entry in source["skipped"]}
    assert reasons["cat/gone.png"] == "broken symbolic link"
    assert reasons["dog/pipe.png"].startswith("not a regular file")
    assert reasons["dog/locked.png"] == "cannot be read (Permission denied)"
    assert source["size"] == 4
    listed = (tmp_path / "raw" / "files.csv").read_text()
    assert "gone.png" not in listed and "pipe.png" not in listed
    assert [entry["path"] for entry in source["skipped"]] == sorted(reasons)


# --- archive --------------------------------------------------------------------------

PETS = {
    f"pets/{name}/{i:02d}.png": png(k, i)
    for k, name in enumerate(["cat", "dog"])
    for i in range(12)
}


def test_archive_from_url_is_kept_as_is_and_read_by_member(server, tmp_path):
    data = make_zip({**PETS, "pets/README.txt": b"hello", "__MACOSX/pets/._x.png": b"x"})
    server.behaviour.files["/pets.zip"] = data
    params = DownloadParams(source="archive", url=server.url("/pets.zip"), sha256=sha(data))
    source = download.run(params, tmp_path / "raw", tmp_path / "dl")
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
    download.run(params, tmp_path / "raw", tmp_path / "dl")
    assert len(server.behaviour.requests) == before


def test_archive_with_labels_in_file_names(tmp_path):
    members = {
        f"train/{name}.{i}.png": png(k, i)
        for k, name in enumerate(["cat", "dog"])
        for i in range(3)
    }
    path = tmp_path / "train.tar.gz"
    path.write_bytes(make_tar(members))
    params = DownloadParams(
        source="archive",
        path=str(path),
        sha256=sha(path.read_bytes()),
        label_pattern=r"^(cat|dog)\.",
    )
    source = download.run(params, tmp_path / "raw")
    assert source["format"] == "tar.gz"
    # The user's own archive is copied, never hard-linked into DVC's hands.
    assert (tmp_path / "raw" / "train.tar.gz").stat().st_ino != path.stat().st_ino
    assert source["counts"] == {"cat": 3, "dog": 3}
    items, _ = list_items(tmp_path / "raw")
    assert items[-1].origin == "train.tar.gz/train/dog.2.png"
    assert items[-1].read() == members["train/dog.2.png"]


def test_archive_empty_class_folder_is_counted_and_prepare_names_it(tmp_path):
    members = {**PETS, "pets/bird/notes.txt": b"no birds yet"}
    path = tmp_path / "pets.zip"
    path.write_bytes(make_zip(members))
    params = DownloadParams(source="archive", path=str(path), sha256=sha(path.read_bytes()))
    source = download.run(params, tmp_path / "raw")
    assert source["counts"] == {"bird": 0, "cat": 12, "dog": 12}
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
    params = DownloadParams(source="archive", url=url, sha256=sha(data))
    download.run(params, tmp_path / "raw", tmp_path / "dl")
    recorded = (tmp_path / "raw" / "source.json").read_text()
    assert "hunter2" not in recorded and "s1gn3d" not in recorded and "alice" not in recorded
    assert "X-Amz-Signature=***&part=1" in json.loads(recorded)["url"]
    missing = DownloadParams(
        source="archive", url=url.replace("pets.zip", "nope.zip"), sha256=sha(data)
    )
    with pytest.raises(StageError, match="HTTP 404") as raised:
        download.run(missing, tmp_path / "raw2", tmp_path / "dl")
    assert "hunter2" not in str(raised.value) and "s1gn3d" not in str(raised.value)


def test_corrupted_download_is_a_clear_error_and_leaves_no_output(server, tmp_path):
    data = make_zip(PETS)
    server.behaviour.files["/pets.zip"] = data[:-10] + b"0123456789"
    params = DownloadParams(source="archive", url=server.url("/pets.zip"), sha256=sha(data))
    with pytest.raises(ChecksumMismatch, match=f"expected {sha(data)}"):
        download.run(params, tmp_path / "raw", tmp_path / "dl")
    assert files_under(tmp_path) == ["dl"]


def test_connection_dropped_halfway_resumes(server, tmp_path):
    data = make_zip({**PETS, "pets/padding.bin": os.urandom(400_000)})
    server.behaviour.files["/pets.zip"] = data
    server.behaviour.drop_after["/pets.zip"] = len(data) // 2
    params = DownloadParams(
        source="archive", url=server.url("/pets.zip"), sha256=sha(data), retries=2
    )
    download.run(params, tmp_path / "raw", tmp_path / "dl")
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
    params = DownloadParams(source="archive", url=server.url("/evil"), sha256=sha(data))
    with pytest.raises(UnsafeArchive):
        download.run(params, work / "data" / "raw", work / "dl")
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
    params = DownloadParams(source="archive", url=server.url("/shapes.tar.gz"), sha256=sha(data))
    download.run(params, tmp_path / "raw", tmp_path / "dl")
    run_pipeline(tmp_path / "raw", tmp_path, ["a", "b", "c"])


# --- CIFAR-10 -------------------------------------------------------------------------


@pytest.fixture
def cifar_server(server):
    data, batches = make_cifar(per_batch=50)
    server.behaviour.files["/cifar-10-python.tar.gz"] = data
    server.cifar = (data, batches)
    return server


def _cifar_params(server, **extra):
    data = server.cifar[0]
    return DownloadParams(
        source="cifar10", url=server.url("/cifar-10-python.tar.gz"), sha256=sha(data), **extra
    )


def test_cifar_pixels_and_labels_survive_download_and_prepare(cifar_server, tmp_path):
    source = download.run(_cifar_params(cifar_server), tmp_path / "raw", tmp_path / "dl")
    assert source["splits"] == {"train": 250, "test": 50}
    assert source["class_names"][:3] == ["airplane", "automobile", "bird"]
    items, classes = list_items(tmp_path / "raw")
    assert len(items) == 300 and len(classes) == 10
    assert {i.split for i in items if "/test_batch/" in i.origin} == {"test"}
    assert {i.split for i in items if "/data_batch_" in i.origin} == {None}
    prepare.run(
        PrepareParams(size=(32, 32), color="rgb", workers=1, min_per_class=1),
        layout_of(tmp_path, raw=tmp_path / "raw", prepared=tmp_path / "prepared"),
    )
    manifest = read_manifest(tmp_path / "prepared").set_index("origin", drop=False)
    batches = cifar_server.cifar[1]
    for batch, index in [("data_batch_1", 0), ("data_batch_3", 17), ("test_batch", 49)]:
        labels, images = batches[batch]
        row = manifest.loc[[f"cifar-10-python.tar.gz/{batch}/{index:05d}"]]
        assert row["label"].iloc[0] == classes[labels[index]]
        _, data = next(read_images(tmp_path / "prepared", row))
        np.testing.assert_array_equal(decode_png_array(data), images[index].transpose(1, 2, 0))


def test_cifar_checksum_mismatch_leaves_no_output(cifar_server, tmp_path):
    params = DownloadParams(
        source="cifar10", url=cifar_server.url("/cifar-10-python.tar.gz"), sha256="0" * 64
    )
    with pytest.raises(ChecksumMismatch):
        download.run(params, tmp_path / "raw", tmp_path / "dl")
    assert files_under(tmp_path) == ["dl"]


def test_cifar_defaults_are_the_official_url_and_checksum():
    params = parse_params({"download": {"source": "cifar10"}}).download
    assert params.url == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert params.sha256 == "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"


def test_cifar_source_to_a_trained_model(cifar_server, tmp_path):
    download.run(_cifar_params(cifar_server), tmp_path / "raw", tmp_path / "dl")
    run_pipeline(tmp_path / "raw", tmp_path, list(download.cifar.CLASSES))


# --- Kaggle ---------------------------------------------------------------------------

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
        download.run(params, tmp_path / "raw", tmp_path / "dl")
    message = str(err.value)
    assert "KAGGLE_USERNAME and KAGGLE_KEY" in message
    assert str(no_kaggle_credentials / "kaggle.json") in message
    assert "never from params.yaml" in message
    assert not (tmp_path / "raw").exists()
    (no_kaggle_credentials / "kaggle.json").write_text('{"username": "me"}')
    with pytest.raises(StageError, match='does not hold a "username" and a "key"'):
        download.run(params, tmp_path / "raw", tmp_path / "dl")


def test_kaggle_download_uses_credentials_and_never_shows_them(
    kaggle_server, tmp_path, capfd, caplog
):
    caplog.set_level(logging.DEBUG)
    params = parse_params({"download": {"source": "kaggle"}}).download
    source = download.run(params, tmp_path / "raw", tmp_path / "dl")
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
        download.run(params, tmp_path / "raw", tmp_path / "dl")
    assert "https://www.kaggle.com/competitions/dogs-vs-cats/rules" in str(err.value)
    assert "I Understand and Accept" in str(err.value)
    assert KEY not in str(err.value)
    assert not (tmp_path / "raw").exists()


def test_kaggle_source_to_a_trained_model(kaggle_server, tmp_path):
    params = parse_params({"download": {"source": "kaggle"}}).download
    download.run(params, tmp_path / "raw", tmp_path / "dl")
    run_pipeline(tmp_path / "raw", tmp_path, ["cat", "dog"])


# --- crawl ----------------------------------------------------------------------------


def url_list_engine(urls_by_keyword):
    """icrawler's own URL-list feeder and parser in place of a search engine; the download
    path (our downloader, icrawler's threads and storage) is the real one."""

    def crawl_keyword(root, registry, keyword, max_num, min_size):
        from icrawler import Crawler, UrlListFeeder
        from icrawler.builtin.urllist import PseudoParser

        crawler = Crawler(
            feeder_cls=UrlListFeeder,
            parser_cls=PseudoParser,
            downloader_cls=crawl.RecordingDownloader,
            downloader_threads=2,
            storage={"root_dir": str(root)},
            log_level=logging.WARNING,
            extra_downloader_args={"registry": registry},
        )
        crawler.crawl(
            feeder_kwargs={"url_list": urls_by_keyword[keyword]},
            parser_kwargs={"queue_timeout": 0.2},
            downloader_kwargs={
                "max_num": max_num,
                "min_size": min_size,
                "overwrite": True,
                "queue_timeout": 0.2,
            },
        )

    return crawl_keyword


@pytest.fixture
def crawl_server(server, monkeypatch):
    files = {
        f"/img/{name}{i}.png": png(k, i, (40, 40)) for k, name in enumerate("ab") for i in range(12)
    }
    files["/img/tiny.png"] = png(0, 99, (8, 8))
    files["/img/page.html"] = b"<html>not an image</html>"
    server.behaviour.files.update(files)
    urls = {
        "apples": [server.url(f"/img/a{i}.png") for i in range(12)]
        + [server.url("/img/tiny.png"), server.url("/img/page.html"), server.url("/img/gone.png")],
        # a0 again under another keyword and class: a duplicate, kept once, in class "a"
        "bananas": [server.url(f"/img/b{i}.png") for i in range(12)] + [server.url("/img/a0.png")],
    }
    monkeypatch.setitem(crawl.ENGINES, "bing", url_list_engine(urls))
    return server


CRAWL = {"source": "crawl", "classes": {"a": ["apples"], "b": ["bananas"]}, "min_size": [16, 16]}


def test_crawl_keeps_each_image_once_named_by_content_with_its_url(crawl_server, tmp_path):
    params = parse_params({"download": CRAWL}).download
    source = download.run(params, tmp_path / "raw")
    assert source["counts"] == {"a": 12, "b": 12}
    images = {i["url"].rsplit("/", 1)[-1]: i for i in source["images"]}
    assert "tiny.png" not in images and "page.html" not in images
    a0 = images["a0.png"]
    assert a0["path"] == f"images/a/{a0['sha256'][:16]}.png"
    assert (tmp_path / "raw" / a0["path"]).read_bytes() == crawl_server.behaviour.files[
        "/img/a0.png"
    ]
    assert len(list((tmp_path / "raw" / "images" / "b").iterdir())) == 12
    items, classes = list_items(tmp_path / "raw")
    assert classes == ["a", "b"] and len(items) == 24


def test_crawl_max_per_class_is_respected(crawl_server, tmp_path):
    params = parse_params({"download": {**CRAWL, "max_per_class": 5}}).download
    source = download.run(params, tmp_path / "raw")
    assert source["counts"] == {"a": 5, "b": 5}


def test_crawl_finding_nothing_mentions_closed_networks(server, tmp_path, monkeypatch):
    monkeypatch.setitem(
        crawl.ENGINES,
        "bing",
        url_list_engine({"apples": [server.url("/x.png")], "bananas": [server.url("/y.png")]}),
    )
    with pytest.raises(StageError, match="closed network"):
        download.run(parse_params({"download": CRAWL}).download, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_crawl_source_to_a_trained_model(crawl_server, tmp_path):
    download.run(parse_params({"download": CRAWL}).download, tmp_path / "raw")
    run_pipeline(tmp_path / "raw", tmp_path, ["a", "b"])


# --- params ---------------------------------------------------------------------------


def test_keys_another_source_reads_are_refused():
    with pytest.raises(ParamsError, match=r"download.url not used by source 'folder'"):
        parse_params({"download": {"source": "folder", "path": "x", "url": "http://x"}})
    with pytest.raises(ParamsError, match=r"needs download.sha256"):
        parse_params({"download": {"source": "archive", "url": "http://127.0.0.1/a.zip"}})
    with pytest.raises(ParamsError, match="at most one group"):
        parse_params({"download": {"source": "folder", "path": "x", "label_pattern": "(a)(b)"}})
    with pytest.raises(ParamsError, match="owner/name"):
        parse_params({"download": {"source": "kaggle", "dataset": "no-owner"}})


# --- through dvc repro ----------------------------------------------------------------


@pytest.mark.slow
def test_archive_source_through_dvc_repro(server, tmp_path):
    """The real pipeline in a copy of the project, fed by an archive on the local server."""
    from benchmarks.project import copy_project, set_params
    from tests.test_end_to_end import SMALL, _run, _stages_run

    members = {
        f"shapes/{name}/{i:02d}.png": png(k, i) for k, name in enumerate("abc") for i in range(20)
    }
    data = make_zip(members)
    server.behaviour.files["/shapes.zip"] = data
    download_params = {"source": "archive", "url": server.url("/shapes.zip"), "sha256": sha(data)}
    project = copy_project(tmp_path / "project", {**SMALL, "download": download_params})

    output = _run(["dvc", "repro"], project)
    assert _stages_run(output) == {"download", "prepare", "split", "augment", "train", "evaluate"}
    metrics = json.loads((project / "reports" / "metrics.json").read_text())
    assert set(metrics["per_class"]) == {"a", "b", "c"}
    assert (project / "data" / "raw" / "shapes.zip").read_bytes() == data
    fetched = len(server.behaviour.requests)

    # A setting that does not change the data reruns download only, from the verified copy.
    set_params(project, {"download": {**download_params, "timeout": 30}})
    output = _run(["dvc", "repro"], project)
    assert _stages_run(output) == {"download"}
    assert len(server.behaviour.requests) == fetched


def test_readme_examples_are_valid_params():
    import re

    import yaml

    from tests.conftest import REPO_ROOT

    readme = (REPO_ROOT / "README.md").read_text()
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if "download:" in b]
    sources = {parse_params(yaml.safe_load(block)).download.source for block in blocks}
    assert sources == {"folder", "archive", "cifar10", "kaggle", "crawl"}

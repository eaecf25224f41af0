"""The folder source: a local folder listed with each file's sha256 and read in place."""

import json
import os

import pytest

from imgpipe.errors import RawDataError, StageError
from imgpipe.params import ParamsError, PrepareParams, parse_params
from imgpipe.raw import list_items
from imgpipe.sources import folder
from stages import download, prepare
from tests.conftest import layout_of, write_class_folders
from tests.imgpipe.sources.helpers import dl_params, files_under, png, run_pipeline, sha


def test_folder_source_lists_files_in_place_without_copying(tmp_path):
    photos = write_class_folders(tmp_path / "photos", ["cat", "dog"], per_class=3) / "images"
    (photos / "dog" / ".DS_Store").write_bytes(b"junk")
    (photos / "loose.png").write_bytes(png(0, 9))
    raw = tmp_path / "raw"
    source = download.run(
        dl_params(source="folder", path=str(photos)), layout_of(tmp_path, raw=raw)
    )
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
    download.run(
        dl_params(source="folder", path=str(photos)), layout_of(tmp_path, raw=tmp_path / "raw")
    )
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
    params = dl_params(source="folder", path=str(photos), label_pattern=r"^(cat|dog)\.")
    source = download.run(params, layout_of(tmp_path, raw=tmp_path / "raw"))
    assert source["class_names"] == ["cat", "dog"]
    assert source["skipped"][0]["path"] == "notes.txt"
    assert "does not match" in source["skipped"][0]["reason"]
    items, _ = list_items(tmp_path / "raw")
    assert {(i.origin, i.label) for i in items} >= {("cat.3.jpg", "cat"), ("dog.0.jpg", "dog")}


def test_file_changed_after_listing_is_refused_with_what_to_run(tmp_path):
    photos = write_class_folders(tmp_path / "photos", ["cat", "dog"], per_class=2) / "images"
    download.run(
        dl_params(source="folder", path=str(photos)), layout_of(tmp_path, raw=tmp_path / "raw")
    )
    (photos / "cat" / "img-001.png").write_bytes(png(1, 7))
    items, _ = list_items(tmp_path / "raw")
    changed = next(i for i in items if i.origin == "cat/img-001.png")
    with pytest.raises(RawDataError, match=r"changed since download.*dvc repro -f download"):
        changed.read()
    (photos / "cat" / "img-000.png").unlink()
    with pytest.raises(RawDataError, match="cannot be read"):
        items[0].read()


def test_folder_source_errors_say_what_to_do(tmp_path):
    with pytest.raises(ParamsError, match=r"download.path: missing; source 'folder' needs it"):
        parse_params({"download": {"source": "folder"}})
    with pytest.raises(StageError, match="is not a folder"):
        download.run(
            dl_params(source="folder", path=str(tmp_path / "nope")),
            layout_of(tmp_path, raw=tmp_path / "r"),
        )
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "cat.0000.jpg").write_bytes(png(0, 0))
    (tmp_path / "flat" / "dog.0000.jpg").write_bytes(png(1, 0))
    with pytest.raises(StageError) as stopped:
        download.run(
            dl_params(source="folder", path=str(tmp_path / "flat")),
            layout_of(tmp_path, raw=tmp_path / "r"),
        )
    message = str(stopped.value)
    assert "no images in class sub-folders (2 file(s) lie directly in it)" in message
    assert "download.label_pattern, e.g. label_pattern: '^([A-Za-z]+)[._ -]'" in message
    assert "gives 'cat' for 'cat.0000.jpg'" in message
    with pytest.raises(
        StageError, match=r"no file name matches .*'\^x\(\\d\)' \(e\.g\. 'cat\.0000\.jpg'\)"
    ):
        download.run(
            dl_params(source="folder", path=str(tmp_path / "flat"), label_pattern=r"^x(\d)"),
            layout_of(tmp_path, raw=tmp_path / "r"),
        )
    assert not (tmp_path / "r").exists()  # a stopped download leaves no output
    # The suggested pattern does label these files.
    source = download.run(
        dl_params(
            source="folder", path=str(tmp_path / "flat"), label_pattern=r"^([A-Za-z]+)[._ -]"
        ),
        layout_of(tmp_path, raw=tmp_path / "r"),
    )
    assert source["class_names"] == ["cat", "dog"]


def test_folder_source_to_a_trained_model(tmp_path):
    photos = write_class_folders(tmp_path / "photos", ["a", "b", "c"], per_class=15) / "images"
    download.run(
        dl_params(source="folder", path=str(photos)), layout_of(tmp_path, raw=tmp_path / "raw")
    )
    run_pipeline(tmp_path / "raw", tmp_path, ["a", "b", "c"])


def test_folder_source_json_is_the_same_in_every_clone(tmp_path, monkeypatch):
    outputs = []
    for clone, spelling in [("one", "photos/images"), ("two", "./photos/images/")]:
        project = tmp_path / clone
        write_class_folders(project / "photos", ["cat", "dog"], per_class=2)
        monkeypatch.chdir(project)
        download.run(
            dl_params(source="folder", path=spelling),
            layout_of(tmp_path, raw=project / "data" / "raw"),
        )
        outputs.append((project / "data" / "raw" / "source.json").read_bytes())
        assert str(tmp_path).encode() not in outputs[-1]
        items, _ = list_items(project / "data" / "raw")  # read relative to the project
        expected = project / "photos" / "images" / "cat" / "img-000.png"
        assert items[0].read() == expected.read_bytes()
    assert outputs[0] == outputs[1]
    assert json.loads(outputs[0])["path"] == "photos/images"


def test_empty_class_folder_is_counted_and_prepare_names_it(tmp_path):
    photos = write_class_folders(tmp_path / "photos", ["cat", "dog"], per_class=4) / "images"
    (photos / "bird").mkdir()
    (photos / "fish").mkdir()
    (photos / "fish" / ".hidden.png").write_bytes(png(0, 1))  # set aside: still no images
    raw = tmp_path / "raw"
    source = download.run(
        dl_params(source="folder", path=str(photos)), layout_of(tmp_path, raw=raw)
    )
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

        monkeypatch.setattr(folder, "file_sha256", refuse)
    source = download.run(
        dl_params(source="folder", path=str(photos)), layout_of(tmp_path, raw=tmp_path / "raw")
    )
    reasons = {entry["path"]: entry["reason"] for entry in source["skipped"]}
    assert reasons["cat/gone.png"] == "broken symbolic link"
    assert reasons["dog/pipe.png"].startswith("not a regular file")
    assert reasons["dog/locked.png"] == "cannot be read (Permission denied)"
    assert source["size"] == 4
    listed = (tmp_path / "raw" / "files.csv").read_text()
    assert "gone.png" not in listed and "pipe.png" not in listed
    assert [entry["path"] for entry in source["skipped"]] == sorted(reasons)

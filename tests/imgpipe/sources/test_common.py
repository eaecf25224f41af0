"""The one labelling rule, seen through every source: a folder, a zip and a .tar.gz of one tree
give the same classes, splits and set-aside files."""

import json
import logging
import os
from pathlib import Path

import pandas as pd
import pytest

from imgpipe.errors import StageError
from imgpipe.params import PrepareParams, SplitParams
from imgpipe.raw import list_items
from imgpipe.shards import read_manifest
from stages import download, prepare, split
from tests.archive_makers import make_tar, make_zip
from tests.conftest import layout_of
from tests.imgpipe.sources.helpers import dl_params, png, sha

NESTED = {
    "cat/a.png": png(0, 1),
    "cat/sub/b.png": png(0, 2),
    "dog/c.png": png(1, 3),
    "dog/x/y/d.png": png(1, 4),
    "a/bmp/b/e.png": png(2, 5),
    "README.txt": b"about these pictures",
}
LABELS = {("cat", "cat/a.png"), ("cat", "cat/sub/b.png"), ("dog", "dog/c.png"),
          ("dog", "dog/x/y/d.png"), ("a", "a/bmp/b/e.png")}  # fmt: skip


def _tree(root: Path, members: dict[str, bytes]) -> Path:
    for name, data in members.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def _download(tmp_path, form: str, members: dict[str, bytes]) -> tuple[Path, dict]:
    """data/raw of ``members`` given as a folder, a zip or a .tar.gz."""
    work = tmp_path / form
    work.mkdir()
    if form == "folder":
        params = dl_params(source="folder", path=str(_tree(work / "tree", members)))
    else:
        path = work / f"tree.{form}"
        path.write_bytes(make_zip(members) if form == "zip" else make_tar(members))
        params = dl_params(source="archive", path=str(path), sha256=sha(path.read_bytes()))
    source = download.run(params, layout_of(work, raw=work / "raw"))
    return work / "raw", source


def _from_tree(origin: str, form: str) -> str:
    """The origin below the tree's root: an archive's origins start with its file name."""
    return origin if form == "folder" else origin.split("/", 1)[1]


def _items(raw: Path, form: str, root: str = "") -> set[tuple]:
    items, _ = list_items(raw)
    return {
        (item.label, _from_tree(item.origin, form).removeprefix(root), item.split) for item in items
    }


@pytest.mark.parametrize("form", ["folder", "zip", "tar.gz"])
def test_the_class_is_the_first_folder_below_the_root_in_every_form(tmp_path, form):
    raw, source = _download(tmp_path, form, NESTED)
    assert source["class_names"] == ["a", "cat", "dog"]
    assert [s["path"] for s in source["skipped"]] == ["README.txt"]
    assert source["skipped"][0]["reason"] == "file is not inside a class folder"
    assert _items(raw, form) == {(label, origin, None) for label, origin in LABELS}
    layout = layout_of(raw.parent, raw=raw, prepared=raw.parent / "prepared")
    prepare.run(PrepareParams(size=(8, 8), workers=1, min_per_class=1), layout)
    manifest = read_manifest(layout.prepared)
    prepared = {(r.label, _from_tree(r.origin, form)) for r in manifest.itertuples()}
    assert prepared == LABELS


def test_one_folder_wrapping_an_archive_is_skipped(tmp_path):
    wrapped = {f"pets/{name}": data for name, data in NESTED.items()}
    raw, source = _download(tmp_path, "zip", {**wrapped, "__MACOSX/pets/._a.png": b"x"})
    assert source["labels"]["root"] == "pets"
    assert _items(raw, "zip", "pets/") == {(label, origin, None) for label, origin in LABELS}
    assert [s["path"] for s in source["skipped"]] == ["__MACOSX/pets/._a.png", "pets/README.txt"]


SPLIT_TREE = {
    **{f"train/{c}/{i}.png": png(k, i) for k, c in enumerate(["cat", "dog"]) for i in range(8)},
    **{f"val/{c}/{i}.png": png(k, 20 + i) for k, c in enumerate(["cat", "dog"]) for i in range(3)},
    **{f"test/{c}/{i}.png": png(k, 40 + i) for k, c in enumerate(["cat", "dog"]) for i in range(3)},
}


@pytest.mark.parametrize("form", ["folder", "zip"])
def test_split_folders_mark_each_file_and_split_keeps_them(tmp_path, form):
    raw, source = _download(tmp_path, form, SPLIT_TREE)
    assert source["class_names"] == ["cat", "dog"]
    assert source["splits"] == {"test": 6, "train": 16, "val": 6}
    marked = {origin: split for _, origin, split in _items(raw, form)}
    assert {name: name.split("/")[0] for name in SPLIT_TREE} == marked
    work = raw.parent
    layout = layout_of(work, raw=raw, prepared=work / "prepared", split=work / "split")
    prepare.run(PrepareParams(size=(8, 8), workers=1, min_per_class=1), layout)
    manifest = read_manifest(layout.prepared)
    origin = dict(zip(manifest["id"], manifest["origin"], strict=True))
    split.run(SplitParams(val=0.2, keep_source_test=True, keep_source_val=True), 3, layout)
    for name in ("train", "val", "test"):
        rows = pd.read_csv(layout.split / f"{name}.csv")
        assert {_from_tree(origin[i], form).split("/")[0] for i in rows["id"]} == {name}
        assert len(rows) == {"train": 16, "val": 6, "test": 6}[name]
    # Without keep_source_val, val is cut from the source's train set; test stays kept.
    split.run(SplitParams(val=0.25, keep_source_test=True), 3, layout)
    val = pd.read_csv(layout.split / "val.csv")
    test = pd.read_csv(layout.split / "test.csv")
    assert len(test) == 6
    assert {_from_tree(origin[i], form).split("/")[0] for i in val["id"]} <= {"train", "val"}


def test_files_csv_of_a_tree_without_split_folders_keeps_its_columns(tmp_path):
    raw, source = _download(tmp_path, "folder", NESTED)
    assert (raw / "files.csv").read_text().splitlines()[0] == "path,label,size,sha256"
    assert "splits" not in source and "names" not in source
    assert source["labels"] == {"first_folder": True, "image_names_only": False, "pattern": None}


@pytest.mark.parametrize("form", ["folder", "zip"])
def test_a_single_class_is_refused_with_what_was_found(tmp_path, form):
    members = {f"cat/{i}.png": png(0, i) for i in range(4)}
    with pytest.raises(StageError, match=r"found 1 class \('cat' with 4 file\(s\)\).*two"):
        _download(tmp_path, form, members)
    assert not (tmp_path / form / "raw").exists()


def test_the_log_counts_what_was_set_aside(tmp_path, caplog):
    members = {**NESTED, "cat/.DS_Store": b"x", "notes.md": b"y"}
    with caplog.at_level(logging.INFO, logger="imgpipe.download"):
        _download(tmp_path, "zip", members)
    assert (
        "5 images in 3 classes; 3 files set aside (2 not inside a class folder, 1 hidden or "
        "system files), listed in"
    ) in caplog.text


def test_a_name_that_is_not_utf8_survives_download_and_prepare(tmp_path):
    photos = _tree(tmp_path / "photos", {k: v for k, v in NESTED.items() if k != "README.txt"})
    odd = os.fsencode(photos) + b"/dog/caf\xff 100%.png"
    Path(os.fsdecode(odd)).write_bytes(png(1, 9))
    raw = tmp_path / "raw"
    download.run(dl_params(source="folder", path=str(photos)), layout_of(tmp_path, raw=raw))
    source = json.loads((raw / "source.json").read_bytes().decode("utf-8"))
    assert source["names"] == "percent-escaped"
    (raw / "files.csv").read_bytes().decode("utf-8")
    items, _ = list_items(raw)
    item = next(i for i in items if i.origin == "dog/caf%FF 100%25.png")
    assert item.read() == png(1, 9)
    layout = layout_of(tmp_path, raw=raw, prepared=tmp_path / "prepared")
    prepare.run(PrepareParams(size=(8, 8), workers=1, min_per_class=1), layout)
    assert "dog/caf%FF 100%25.png" in set(read_manifest(layout.prepared)["origin"])

import json
from dataclasses import replace

import pytest

from imgpipe.errors import RawDataError
from imgpipe.raw import RawItem, list_items
from imgpipe.sources import SOURCES
from tests.archive_makers import make_zip


def _source(raw, **fields):
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "source.json").write_text(json.dumps(fields))


def test_class_folder_items_keep_their_contract(raw_dir):
    items, classes = list_items(raw_dir)
    assert classes == ["circle", "square", "triangle"]
    assert isinstance(items[0], RawItem)
    assert (items[0].origin, items[0].label, items[0].split) == (
        "images/circle/img-000.png",
        "circle",
        None,
    )


def test_missing_source_and_unknown_layout_say_what_to_do(tmp_path):
    with pytest.raises(RawDataError, match="run the download stage first"):
        list_items(tmp_path)
    _source(tmp_path, layout="mystery")
    with pytest.raises(RawDataError, match="unknown kind None and unknown layout 'mystery'"):
        list_items(tmp_path)


def test_the_kind_picks_the_reader_of_its_source(tmp_path, monkeypatch):
    seen = []

    def list_source(raw_dir, source):
        seen.append(source["kind"])
        return [RawItem("b/2", "b", bytes), RawItem("a/1", "a", bytes)]

    monkeypatch.setitem(SOURCES, "crawl", replace(SOURCES["crawl"], list_items=list_source))
    # The layout alone would pick the class-folder reader, which needs images/ to exist.
    _source(tmp_path, kind="crawl", layout="class_folders", root="images")
    items, classes = list_items(tmp_path)
    assert seen == ["crawl"]
    assert [item.origin for item in items] == ["a/1", "b/2"]
    assert classes == ["a", "b"]  # no class_names recorded: the labels found, sorted


def test_a_hand_written_source_json_is_read_by_its_layout(tmp_path):
    raw = tmp_path / "raw"
    _source(raw, kind="corpus", layout="archive", archive="a.zip", labels={})
    (raw / "a.zip").write_bytes(make_zip({"x/cat/1.png": b"one", "x/dog/2.png": b"two"}))
    items, classes = list_items(raw)
    assert classes == ["cat", "dog"]
    assert [(i.origin, i.read()) for i in items] == [
        ("a.zip/x/cat/1.png", b"one"),
        ("a.zip/x/dog/2.png", b"two"),
    ]

"""The table source: a CSV or Parquet of paths and labels, with optional groups and splits."""

import pandas as pd
import pytest

from imgpipe.errors import StageError
from imgpipe.fetch_errors import ChecksumMismatch
from imgpipe.params import ParamsError, PrepareParams, SplitParams, parse_params
from imgpipe.raw import list_items
from imgpipe.shards import SOURCE_GROUP, SOURCE_SPLIT, read_manifest, read_split
from stages import download, prepare, split
from tests.conftest import layout_of
from tests.imgpipe.sources.helpers import dl_params, png, sha

CLASSES = ["cat", "dog"]


def _photos(root, per_class=12):
    """Images in one flat folder plus a table naming their classes, groups of three."""
    (root / "img").mkdir(parents=True)
    rows = []
    for label, name in enumerate(CLASSES):
        for sample in range(per_class):
            path = f"img/{name}-{sample:02d}.png"
            (root / path).write_bytes(png(label, sample))
            rows.append({"file": path, "kind": name, "group": f"{name}{sample // 3}", "split": ""})
    return pd.DataFrame(rows)


def test_relative_paths_groups_and_split_column_give_the_expected_splits(tmp_path):
    data = tmp_path / "photos"
    table = _photos(data, per_class=18)
    table.loc[table["group"] == "cat3", "split"] = "test"  # the source's own test images
    table.to_csv(data / "labels.csv", index=False)
    params = dl_params(
        source="table", path=str(data / "labels.csv"), path_column="file", label_column="kind"
    )
    layout = layout_of(tmp_path)
    source = download.run(params, layout)
    assert source["kind"] == "table" and source["size"] == 36 and source["skipped"] == []
    assert source["class_names"] == CLASSES
    assert source["splits"] == {"-": 33, "test": 3}
    prepare.run(PrepareParams(size=(16, 16), color="rgb", workers=1), layout)
    manifest = read_manifest(layout.prepared)
    assert set(manifest[SOURCE_GROUP]) == set(table["group"])
    assert set(manifest.loc[manifest[SOURCE_SPLIT] == "test", "origin"]) == set(
        table.loc[table["split"] == "test", "file"]
    )
    split.run(SplitParams(val=0.25, keep_source_test=True), 3, layout)
    side = {}
    for name in ("train", "val", "test"):
        side.update(dict.fromkeys(read_split(layout.split, name)["id"], name))
    by_group = manifest.assign(side=manifest["id"].map(side)).groupby(SOURCE_GROUP)["side"]
    assert (by_group.nunique() == 1).all()  # every group on one side
    assert set(by_group.first()[lambda s: s == "test"].index) == {"cat3"}
    assert {"train", "val"} <= set(by_group.first())


def test_bad_rows_are_listed_with_row_and_reason_never_dropped_silently(tmp_path):
    data = tmp_path / "photos"
    table = _photos(data, per_class=3)[["file", "kind"]]
    extra = pd.DataFrame(
        [
            {"file": "img/gone.png", "kind": "cat"},
            {"file": "", "kind": "dog"},
            {"file": "img/cat-00.png", "kind": "dog"},  # listed again, another label
            {"file": "img/dog-00.png", "kind": ""},
            {"file": "img", "kind": "cat"},
        ]
    )
    pd.concat([table, extra]).to_csv(data / "t.csv", index=False)
    params = dl_params(
        source="table", path=str(data / "t.csv"), path_column="file", label_column="kind"
    )
    source = download.run(params, layout_of(tmp_path))
    assert source["size"] == 6
    assert source["skipped"] == [
        {"row": 8, "path": "img/gone.png", "reason": "missing"},
        {"row": 9, "path": "", "reason": "no path"},
        {"row": 10, "path": "img/cat-00.png", "reason": "the same path as row 2, which is kept"},
        {"row": 11, "path": "img/dog-00.png", "reason": "no label"},
        {"row": 12, "path": "img", "reason": "not a regular file"},
    ]
    assert source["label_conflicts"] == [{"path": "img/cat-00.png", "labels": ["cat", "dog"]}]
    report = prepare.run(PrepareParams(size=(16, 16), workers=1), layout_of(tmp_path))
    assert len(report["skipped_by_download"]) == 5


def test_parquet_and_root_read_like_csv_and_a_changed_file_is_refused(tmp_path):
    data = tmp_path / "photos"
    table = _photos(data, per_class=2)
    table["file"] = table["file"].str.removeprefix("img/")
    table.to_parquet(tmp_path / "t.parquet")
    table.to_csv(tmp_path / "t.csv", index=False)
    listings = []
    for name in ("t.parquet", "t.csv"):
        params = dl_params(
            source="table",
            path=str(tmp_path / name),
            root=str(data / "img"),
            path_column="file",
            label_column="kind",
        )
        raw = tmp_path / f"raw-{name}"
        download.run(params, layout_of(tmp_path, raw=raw))
        listings.append((raw / "files.csv").read_text())
    assert listings[0] == listings[1]
    items, classes = list_items(tmp_path / "raw-t.csv")
    assert classes == CLASSES and items[0].group == "cat0"
    (data / "img" / items[0].origin).write_bytes(png(1, 99))
    with pytest.raises(StageError, match=r"changed since download listed it"):
        items[0].read()


def test_table_from_a_url_is_checked_against_its_sha256(tmp_path, server):
    data = tmp_path / "photos"
    table = _photos(data, per_class=2)
    body = table.to_csv(index=False).encode()
    server.behaviour.files["/labels.csv"] = body
    raw = dict(source="table", url=server.url("/labels.csv"), root=str(data))
    raw.update(path_column="file", label_column="kind")
    source = download.run(dl_params(**raw, sha256=sha(body)), layout_of(tmp_path))
    assert source["table_sha256"] == sha(body) and source["size"] == 4
    with pytest.raises(ChecksumMismatch):
        download.run(dl_params(**raw, sha256="0" * 64), layout_of(tmp_path / "other"))


def test_params_and_table_mistakes_say_what_to_set(tmp_path):
    with pytest.raises(ParamsError, match=r"needs download\.root"):
        parse_params(
            {"download": {"source": "table", "url": "http://127.0.0.1/t.csv", "sha256": "0" * 64}}
        )
    with pytest.raises(ParamsError, match=r"exactly one of download\.url, download\.path"):
        parse_params({"download": {"source": "table"}})
    _photos(tmp_path).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(StageError, match=r"no column 'path'.*'file', 'kind'.*download.path_column"):
        download.run(dl_params(source="table", path=str(tmp_path / "t.csv")), layout_of(tmp_path))
    (tmp_path / "t.xlsx").write_bytes(b"x")
    with pytest.raises(StageError, match=r"neither \.csv nor \.parquet"):
        download.run(dl_params(source="table", path=str(tmp_path / "t.xlsx")), layout_of(tmp_path))
    empty = tmp_path / "empty.csv"
    empty.write_text("path,label\nnope.png,cat\n")
    with pytest.raises(StageError, match=r"none of the 1 rows .* the first problem: missing"):
        download.run(dl_params(source="table", path=str(empty)), layout_of(tmp_path))

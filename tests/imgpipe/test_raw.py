import io
import json

import numpy as np
import pytest
from PIL import Image

from imgpipe.errors import RawDataError
from imgpipe.raw import RawItem, list_items
from tests.archive_makers import make_cifar, make_zip


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
    with pytest.raises(RawDataError, match="unknown layout 'mystery'"):
        list_items(tmp_path)


def test_archive_members_are_read_directly(tmp_path):
    raw = tmp_path / "raw"
    _source(raw, layout="archive", archive="a.zip", labels={"image_names_only": True})
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


def test_cifar_items_are_lossless_pngs_with_the_test_batch_marked(tmp_path):
    raw = tmp_path / "raw"
    data, batches = make_cifar(per_batch=4)
    _source(raw, layout="cifar10", archive="c.tar.gz")
    (raw / "c.tar.gz").write_bytes(data)
    items, classes = list_items(raw)
    assert len(items) == 24 and len(classes) == 10
    item = next(i for i in items if i.origin == "c.tar.gz/test_batch/00002")
    labels, images = batches["test_batch"]
    assert item.label == classes[labels[2]]
    assert item.split == "test"
    pixels = np.asarray(Image.open(io.BytesIO(item.read())))
    np.testing.assert_array_equal(pixels, images[2].transpose(1, 2, 0))

"""The cifar10 source: download, safe batch reading, exact pixels, its own test split."""

import io
import json
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from imgpipe.archives import Archive
from imgpipe.errors import RawDataError
from imgpipe.fetch_errors import ChecksumMismatch
from imgpipe.images import decode_png_array
from imgpipe.params import PrepareParams, parse_params
from imgpipe.raw import list_items
from imgpipe.shards import read_images, read_manifest
from imgpipe.sources import cifar10
from stages import download, prepare
from tests.archive_makers import make_cifar, make_tar
from tests.conftest import layout_of
from tests.imgpipe.sources.helpers import dl_params, files_under, run_pipeline, sha


@pytest.fixture
def cifar_server(server):
    data, batches = make_cifar(per_batch=50)
    server.behaviour.files["/cifar-10-python.tar.gz"] = data
    server.cifar = (data, batches)
    return server


def _cifar_params(server, **extra):
    data = server.cifar[0]
    return dl_params(
        source="cifar10", url=server.url("/cifar-10-python.tar.gz"), sha256=sha(data), **extra
    )


def test_cifar_pixels_and_labels_survive_download_and_prepare(cifar_server, tmp_path):
    source = download.run(
        _cifar_params(cifar_server),
        layout_of(tmp_path, raw=tmp_path / "raw", downloads=tmp_path / "dl"),
    )
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
    params = dl_params(
        source="cifar10", url=cifar_server.url("/cifar-10-python.tar.gz"), sha256="0" * 64
    )
    with pytest.raises(ChecksumMismatch):
        download.run(params, layout_of(tmp_path, raw=tmp_path / "raw", downloads=tmp_path / "dl"))
    assert files_under(tmp_path) == ["dl"]


def test_cifar_defaults_are_the_official_url_and_checksum():
    params = parse_params({"download": {"source": "cifar10"}}).download
    assert params.url == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert params.sha256 == "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"


def test_cifar_source_to_a_trained_model(cifar_server, tmp_path):
    download.run(
        _cifar_params(cifar_server),
        layout_of(tmp_path, raw=tmp_path / "raw", downloads=tmp_path / "dl"),
    )
    run_pipeline(tmp_path / "raw", tmp_path, list(cifar10.CLASSES))


# --- reading the batches ---------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True])
def test_batches_hold_exact_pixels_and_labels_channel_last(tmp_path, binary):
    data, expected = make_cifar(per_batch=7, binary=binary)
    (tmp_path / "c.tar.gz").write_bytes(data)
    with Archive(tmp_path / "c.tar.gz") as archive:
        batches = cifar10.read_batches(archive)
    assert [b.name for b in batches] == [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    assert [b.split for b in batches] == [None] * 5 + ["test"]
    for batch in batches:
        labels, images = expected[batch.name]
        np.testing.assert_array_equal(batch.labels, labels)
        assert batch.images.shape == (7, 32, 32, 3)
        # Stored channel first: red plane, green plane, blue plane.
        np.testing.assert_array_equal(batch.images, images.transpose(0, 2, 3, 1))
        assert batch.images[3, 5, 9, 2] == images[3, 2, 5, 9]


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickle_naming_any_other_callable_is_refused():
    hostile = pickle.dumps({b"data": Exploit(), b"labels": []}, protocol=2)
    with pytest.raises(cifar10.CifarError, match=r"refusing to load (posix|os)\.system"):
        cifar10.load_python_batch(hostile, "data_batch_1")


def test_wrong_shapes_and_labels_are_refused():
    bad = pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, protocol=2)
    with pytest.raises(cifar10.CifarError, match=r"expected uint8 \(N, 3072\)"):
        cifar10.load_python_batch(bad, "data_batch_1")
    bad = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 12]}, protocol=2)
    with pytest.raises(cifar10.CifarError, match=r"numbers in 0..9"):
        cifar10.load_python_batch(bad, "data_batch_1")
    with pytest.raises(cifar10.CifarError, match=r"whole 3073-byte records"):
        cifar10.load_binary_batch(b"x" * 3000, "data_batch_1.bin")


def test_archive_without_batches_says_which_file_to_use(tmp_path):
    (tmp_path / "x.tar.gz").write_bytes(make_tar({"cat/a.png": b"x"}))
    with (
        Archive(tmp_path / "x.tar.gz") as archive,
        pytest.raises(cifar10.CifarError, match=r"cifar-10-python.tar.gz"),
    ):
        cifar10.read_batches(archive)


def test_unpickler_builds_arrays_from_python2_style_pickles():
    array = np.arange(3072, dtype=np.uint8).reshape(1, 3072)
    raw = pickle.dumps({b"data": array, b"labels": [4]}, protocol=2)
    loaded = cifar10.RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    np.testing.assert_array_equal(loaded[b"data"], array)


def test_cifar_items_are_lossless_pngs_with_the_test_batch_marked(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    data, batches = make_cifar(per_batch=4)
    source = {"kind": "cifar10", "layout": "cifar10", "archive": "c.tar.gz"}
    (raw / "source.json").write_text(json.dumps({**source, "class_names": cifar10.CLASSES}))
    (raw / "c.tar.gz").write_bytes(data)
    items, classes = list_items(raw)
    assert len(items) == 24 and len(classes) == 10
    item = next(i for i in items if i.origin == "c.tar.gz/test_batch/00002")
    labels, images = batches["test_batch"]
    assert item.label == classes[labels[2]]
    assert item.split == "test"
    pixels = np.asarray(Image.open(io.BytesIO(item.read())))
    np.testing.assert_array_equal(pixels, images[2].transpose(1, 2, 0))
    # Without recorded class names the published ones label the items.
    unnamed = cifar10.list_items(raw, source)
    assert {i.label for i in unnamed} <= set(cifar10.CLASSES)
    assert next(i for i in unnamed if i.origin == item.origin).label == item.label


def _pickled(labels, data):
    """A python-version batch as its pickle, built from whatever the test gives."""
    return pickle.dumps({b"data": data, b"labels": labels}, protocol=2)


@pytest.mark.parametrize(
    "labels,expected",
    [
        ([0, 1.9], r"labels\[1\] is 1.9 \(float\), not an integer"),
        ([True, 0], r"labels\[0\] is True \(bool\), not an integer"),
        (b"\x01\x02", r"labels are bytes \(b'\\x01\\x02'\), not a list of class numbers"),
        ({0: 1, 1: 2}, r"labels are dict \(\{0: 1, 1: 2\}\)"),
        ("12", r"labels are str"),
        ([0, "3"], r"labels\[1\] is '3' \(str\)"),
        ([0, None], r"labels\[1\] is None \(NoneType\)"),
        ([0, [1]], r"labels\[1\] is \[1\] \(list\)"),
        ([0, -1], r"labels\[1\] is -1, outside 0..9"),
        ([3, 10], r"labels\[1\] is 10, outside 0..9"),
        ([0, 2**70], r"labels\[1\] is 1180591620717411303424, outside 0..9"),
        (np.array([1.0, 2.0]), r"labels are a float64 array, not integers \(labels\[0\] is 1.0\)"),
        (np.array([True, False]), r"labels are a bool array, not integers"),
        (np.array([[1, 2]]), r"labels are an array of shape \(1, 2\), not one per image"),
        (np.array([1, 255], np.uint8), r"labels\[1\] is 255, outside 0..9"),
        ([np.float32(1.5), 0], r"labels\[0\] is 1.5 \(float32\)"),
    ],
)
def test_labels_that_are_not_class_numbers_are_refused_naming_the_first(labels, expected):
    with pytest.raises(cifar10.CifarError, match=r"CIFAR batch data_batch_1: " + expected):
        cifar10.load_python_batch(_pickled(labels, np.zeros((2, 3072), np.uint8)), "data_batch_1")


def test_labels_of_python_or_numpy_integers_are_read():
    pixels = np.zeros((3, 3072), np.uint8)
    readable = [
        [0, 9, 4],
        (0, 9, 4),
        [np.int64(0), np.uint8(9), 4],
        np.array([0, 9, 4]),
        np.array([0, 9, 4], np.uint8),
        np.array([0, 9, 4], ">i4"),
    ]
    for labels in readable:
        batch = cifar10.load_python_batch(_pickled(labels, pixels), "test_batch")
        assert batch.labels.tolist() == [0, 9, 4] and batch.labels.dtype == np.int64
    with pytest.raises(cifar10.CifarError, match=r"2 labels for 3 images"):
        cifar10.load_python_batch(_pickled([0, 1], pixels), "test_batch")


@pytest.mark.parametrize(
    "data,expected",
    [
        (np.zeros((2, 3072), np.float32), r"data is float32 \(2, 3072\)"),
        (np.zeros((2, 3, 32, 32), np.uint8), r"data is uint8 \(2, 3, 32, 32\)"),
        ([[0] * 3072] * 2, r"data is list"),
        (b"\0" * 6144, r"data is bytes"),
    ],
)
def test_data_that_is_not_uint8_rows_of_3072_is_refused(data, expected):
    with pytest.raises(cifar10.CifarError, match=expected + r", expected uint8 \(N, 3072\)"):
        cifar10.load_python_batch(_pickled([0, 1], data), "data_batch_2")


def test_a_bad_batch_in_an_archive_names_the_archive_and_member(tmp_path):
    batch = _pickled([0, 1.9], np.zeros((2, 3072), np.uint8))
    good = _pickled([0, 1], np.zeros((2, 3072), np.uint8))
    members = {f"cifar-10-batches-py/data_batch_{i}": good for i in range(1, 6)}
    members["cifar-10-batches-py/test_batch"] = batch
    (tmp_path / "c.tar.gz").write_bytes(make_tar(members))
    with (
        Archive(tmp_path / "c.tar.gz") as archive,
        pytest.raises(RawDataError, match=r"c.tar.gz/cifar-10-batches-py/test_batch: labels\[1\]"),
    ):
        cifar10.read_batches(archive)

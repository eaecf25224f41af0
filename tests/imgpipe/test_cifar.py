import io
import os
import pickle

import numpy as np
import pytest

from imgpipe import cifar
from imgpipe.archives import Archive
from tests.archive_makers import make_cifar, make_tar


@pytest.mark.parametrize("binary", [False, True])
def test_batches_hold_exact_pixels_and_labels_channel_last(tmp_path, binary):
    data, expected = make_cifar(per_batch=7, binary=binary)
    (tmp_path / "c.tar.gz").write_bytes(data)
    with Archive(tmp_path / "c.tar.gz") as archive:
        batches = cifar.read_batches(archive)
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
    with pytest.raises(cifar.CifarError, match=r"refusing to load (posix|os)\.system"):
        cifar.load_python_batch(hostile, "data_batch_1")


def test_wrong_shapes_and_labels_are_refused():
    bad = pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, protocol=2)
    with pytest.raises(cifar.CifarError, match=r"expected uint8 \(N, 3072\)"):
        cifar.load_python_batch(bad, "data_batch_1")
    bad = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 12]}, protocol=2)
    with pytest.raises(cifar.CifarError, match=r"numbers in 0..9"):
        cifar.load_python_batch(bad, "data_batch_1")
    with pytest.raises(cifar.CifarError, match=r"whole 3073-byte records"):
        cifar.load_binary_batch(b"x" * 3000, "data_batch_1.bin")


def test_archive_without_batches_says_which_file_to_use(tmp_path):
    (tmp_path / "x.tar.gz").write_bytes(make_tar({"cat/a.png": b"x"}))
    with (
        Archive(tmp_path / "x.tar.gz") as archive,
        pytest.raises(cifar.CifarError, match=r"cifar-10-python.tar.gz"),
    ):
        cifar.read_batches(archive)


def test_unpickler_builds_arrays_from_python2_style_pickles():
    array = np.arange(3072, dtype=np.uint8).reshape(1, 3072)
    raw = pickle.dumps({b"data": array, b"labels": [4]}, protocol=2)
    loaded = cifar.RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    np.testing.assert_array_equal(loaded[b"data"], array)

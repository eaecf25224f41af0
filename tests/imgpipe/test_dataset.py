import numpy as np
import pytest

from imgpipe.dataset import (
    encoded_images,
    epoch_order,
    image_batches,
    sample_index,
    steps_per_epoch,
    training_batches,
)
from imgpipe.images import encode_png
from imgpipe.shards import PackedImage, ShardWriter, write_manifest

CLASSES = {"a": 0, "b": 1}


@pytest.fixture
def shards(tmp_path):
    """Ten 4x4 grey images, class by class as prepare writes them, four per shard.

    Every pixel of image ``i`` has the value ``i``, so a batch tells which images it holds.
    """
    from PIL import Image

    rows = []
    with ShardWriter(tmp_path, shard_size=4) as writer:
        for i in range(10):
            image = Image.fromarray(np.full((4, 4), i, dtype=np.uint8), mode="L")
            place = writer.add(PackedImage(f"img{i}", encode_png(image)))
            rows.append({"id": f"img{i}", "label": "a" if i < 5 else "b", **place})
    write_manifest(tmp_path, rows, ["id", "label", "shard", "offset", "length"])
    from imgpipe.shards import read_manifest

    return tmp_path, read_manifest(tmp_path)


def _ids(batch) -> list[int]:
    pixels, labels = batch
    values = pixels.numpy()[:, 0, 0, 0].tolist()
    assert labels.numpy().tolist() == [0 if v < 5 else 1 for v in values]
    return values


def test_images_stream_in_manifest_order_without_a_seed(shards):
    directory, rows = shards
    assert len({*rows["shard"]}) == 3
    batches = image_batches(encoded_images([(directory, rows)], CLASSES), 1, 4, size=(4, 4))
    assert [v for batch in batches for v in _ids(batch)] == list(range(10))


def test_each_epoch_reads_every_image_once_in_its_own_seeded_order(shards):
    directory, rows = shards
    index = sample_index([(directory, rows)], CLASSES)
    data = training_batches(index, 1, (4, 4), 3, seed=7, first_epoch=0, epochs=3)
    steps = steps_per_epoch(index, 3)
    assert steps == 4
    batches = [_ids(batch) for batch in data]
    assert [len(b) for b in batches] == [3, 3, 3, 1] * 3  # epochs never share a batch
    epochs = [[v for b in batches[e * steps : (e + 1) * steps] for v in b] for e in range(3)]
    for order in epochs:
        assert sorted(order) == list(range(10))
    assert epochs[0] != epochs[1] != epochs[2]
    # The whole set is shuffled, not shard by shard: classes mix from the first batch on.
    assert epochs == [epoch_order(10, 7, e).tolist() for e in range(3)]


def test_a_resumed_stream_reads_later_epochs_exactly_as_an_uninterrupted_one(shards):
    directory, rows = shards
    index = sample_index([(directory, rows)], CLASSES)
    full = [_ids(b) for b in training_batches(index, 1, (4, 4), 4, 3, 0, 3)]
    resumed = [_ids(b) for b in training_batches(index, 1, (4, 4), 4, 3, 1, 3)]
    assert resumed == full[3:]


def test_several_shard_directories_combine(shards, tmp_path):
    directory, rows = shards
    index = sample_index([(directory, rows[:3]), (directory, rows[7:])], CLASSES)
    assert len(index) == 6
    assert index.class_counts(2).tolist() == [3, 3]
    batches = image_batches(
        encoded_images([(directory, rows[:3]), (directory, rows[7:])], CLASSES), 1, 10
    )
    assert [v for batch in batches for v in _ids(batch)] == [0, 1, 2, 7, 8, 9]


def test_epoch_order_depends_on_seed_and_epoch_only():
    assert epoch_order(50, 1, 2).tolist() == epoch_order(50, 1, 2).tolist()
    assert epoch_order(50, 1, 2).tolist() != epoch_order(50, 2, 2).tolist()
    assert epoch_order(5, None, 9).tolist() == [0, 1, 2, 3, 4]

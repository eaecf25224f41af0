"""tf.data input streamed from tar shards: shards are read whole, images sliced out by offset.

Only a few shards are in memory at a time (``cycle_length``), decoding runs in parallel TF ops
outside the GIL, and batches are prefetched, so input keeps up with training on any dataset
size. Pixels reach the model as uint8; scaling is a layer inside the model, so ``predict``
feeds exactly what training fed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf


def _shard_table(directory: Path, rows: pd.DataFrame, class_index: dict[str, int]):
    """Per shard: its path and the offsets, lengths and labels of the wanted images."""
    paths, offsets, lengths, labels = [], [], [], []
    for shard, group in rows.groupby("shard", sort=True):
        group = group.sort_values("offset")
        paths.append(str(Path(directory) / str(shard)))
        offsets.append(group["offset"].to_numpy(np.int64))
        lengths.append(group["length"].to_numpy(np.int64))
        labels.append(group["label"].map(class_index).to_numpy(np.int64))
    return (
        tf.constant(paths),
        tf.ragged.constant(offsets, dtype=tf.int64),
        tf.ragged.constant(lengths, dtype=tf.int64),
        tf.ragged.constant(labels, dtype=tf.int64),
    )


def encoded_images(
    sources: list[tuple[Path, pd.DataFrame]],
    class_index: dict[str, int],
    shuffle_seed: int | None = None,
) -> tf.data.Dataset:
    """(png bytes, label) for the given manifest rows of each shard directory."""
    tables = [_shard_table(d, rows, class_index) for d, rows in sources if len(rows)]
    paths = tf.concat([t[0] for t in tables], axis=0)
    offsets, lengths, labels = (tf.concat([t[i] for t in tables], axis=0) for i in (1, 2, 3))
    shards = tf.data.Dataset.from_tensor_slices((paths, offsets, lengths, labels))
    if shuffle_seed is not None:
        shards = shards.shuffle(len(paths), seed=shuffle_seed, reshuffle_each_iteration=True)

    def images_of(path, offset, length, label):
        content = tf.io.read_file(path)
        return tf.data.Dataset.from_tensor_slices(
            (tf.strings.substr(content, offset, length), label)
        )

    images = shards.interleave(
        images_of,
        cycle_length=4,
        block_length=16,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    # A known length lets Keras show progress and size the first epoch without a warning.
    total = sum(len(rows) for _, rows in sources)
    return images.apply(tf.data.experimental.assert_cardinality(total))


def image_batches(
    encoded: tf.data.Dataset,
    channels: int,
    batch_size: int,
    shuffle_buffer: int | None = None,
    seed: int | None = None,
) -> tf.data.Dataset:
    if shuffle_buffer:
        encoded = encoded.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)

    def decode(data, label):
        return tf.io.decode_png(data, channels=channels), label

    return (
        encoded.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )

"""tf.data input streamed from tar shards, one image read at a time by its manifest offset.

Only the index (shard, offset, length, label: a few dozen bytes per image) is held in memory;
image bytes are read just before they are decoded, so memory stays flat however large the
dataset grows. Every training epoch reads the images in a fresh seeded permutation of the
whole dataset: shards are written class by class, so shuffling whole shards or a window of
them would feed the network long runs of one class. Reads are grouped in chunks (sorted by
position within a chunk, so the disk sees mostly forward reads), PNG decoding runs in
parallel TF ops outside the GIL, and batches are prefetched. Pixels reach the model as uint8;
scaling is a layer inside the model, so ``predict`` feeds exactly what training fed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

CHUNK = 256  # images read per generator call: amortizes the Python step, keeps memory small


@dataclass(frozen=True)
class SampleIndex:
    """Where each sample's encoded bytes are, and its class index."""

    paths: tuple[str, ...]
    shard: np.ndarray  # index into paths
    offset: np.ndarray
    length: np.ndarray
    label: np.ndarray

    def __len__(self) -> int:
        return len(self.label)

    def class_counts(self, num_classes: int) -> np.ndarray:
        return np.bincount(self.label, minlength=num_classes)


def sample_index(
    sources: list[tuple[Path, pd.DataFrame]], class_index: dict[str, int]
) -> SampleIndex:
    """The manifest rows of each shard directory, in the order given."""
    paths: list[str] = []
    shard, offset, length, label = [], [], [], []
    for directory, rows in sources:
        if not len(rows):
            continue
        names = sorted(rows["shard"].astype(str).unique())
        position = {name: len(paths) + i for i, name in enumerate(names)}
        paths += [str(Path(directory) / name) for name in names]
        shard.append(rows["shard"].astype(str).map(position).to_numpy(np.int64))
        offset.append(rows["offset"].to_numpy(np.int64))
        length.append(rows["length"].to_numpy(np.int64))
        label.append(rows["label"].map(class_index).to_numpy(np.int64))

    def joined(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    return SampleIndex(tuple(paths), joined(shard), joined(offset), joined(length), joined(label))


def epoch_order(size: int, seed: int | None, epoch: int) -> np.ndarray:
    """The reading order of one epoch: a permutation keyed by (seed, epoch), or as listed.

    Keyed by the epoch number rather than drawn from a running generator, so a run resumed
    at epoch 3 reads epoch 3 in the same order an uninterrupted run would.
    """
    if seed is None:
        return np.arange(size)
    return np.random.default_rng([seed, epoch]).permutation(size)


def _read_chunks(
    index: SampleIndex, order: np.ndarray, chunk: int = CHUNK
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    yield from _read_pieces(index, (order[s : s + chunk] for s in range(0, len(order), chunk)))


def _read_pieces(
    index: SampleIndex, pieces: Iterable[np.ndarray]
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(encoded bytes, labels) of each piece of sample numbers, the shard files kept open."""
    handles: dict[int, object] = {}
    try:
        for picked in pieces:
            data = np.empty(len(picked), dtype=object)
            for i in np.lexsort((index.offset[picked], index.shard[picked])):
                sample = picked[i]
                shard = int(index.shard[sample])
                if shard not in handles:
                    handles[shard] = open(index.paths[shard], "rb")  # noqa: SIM115
                handle = handles[shard]
                handle.seek(int(index.offset[sample]))
                data[i] = handle.read(int(index.length[sample]))
            yield data, index.label[picked]
    finally:
        for handle in handles.values():
            handle.close()


def _encoded_epoch(index: SampleIndex, seed: int | None, epoch) -> tf.data.Dataset:
    """(png bytes, label) of one epoch; ``epoch`` may be a tensor (inside flat_map)."""

    @tf.autograph.experimental.do_not_convert
    def chunks(epoch_value):
        yield from _read_chunks(index, epoch_order(len(index), seed, int(epoch_value)))

    return tf.data.Dataset.from_generator(
        chunks,
        args=(epoch,),
        output_signature=(
            tf.TensorSpec(shape=(None,), dtype=tf.string),
            tf.TensorSpec(shape=(None,), dtype=tf.int64),
        ),
    ).unbatch()


def encoded_images(
    sources: list[tuple[Path, pd.DataFrame]],
    class_index: dict[str, int],
    shuffle_seed: int | None = None,
) -> tf.data.Dataset:
    """(png bytes, label) for the given manifest rows of each shard directory, one pass.

    In manifest order, or in the seeded order of epoch 0 when ``shuffle_seed`` is given.
    """
    index = sample_index(sources, class_index)
    images = _encoded_epoch(index, shuffle_seed, 0)
    # A known length lets Keras show progress and size the first epoch without a warning.
    return images.apply(tf.data.experimental.assert_cardinality(len(index)))


def _decoder(channels: int, size: tuple[int, int] | None):
    def decode(data, label):
        pixels = tf.io.decode_png(data, channels=channels)
        if size is not None:
            width, height = size
            pixels = tf.ensure_shape(pixels, (height, width, channels))
        return pixels, label

    return decode


def image_batches(
    encoded: tf.data.Dataset,
    channels: int,
    batch_size: int,
    shuffle_buffer: int | None = None,
    seed: int | None = None,
    size: tuple[int, int] | None = None,
) -> tf.data.Dataset:
    """Decoded uint8 batches of (pixels, label); ``size`` is (width, height) when known."""
    if shuffle_buffer:
        encoded = encoded.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return (
        encoded.map(
            _decoder(channels, size), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )


def training_batches(
    index: SampleIndex,
    channels: int,
    size: tuple[int, int],
    batch_size: int,
    seed: int,
    first_epoch: int,
    epochs: int,
) -> tf.data.Dataset:
    """Batches of epochs ``first_epoch`` .. ``epochs - 1`` as one stream.

    Each epoch is batched on its own, so the last, smaller batch of an epoch never mixes with
    the next one and ``ceil(len(index) / batch_size)`` steps make exactly one epoch.
    """
    decode = _decoder(channels, size)

    @tf.autograph.experimental.do_not_convert
    def one_epoch(epoch):
        return (
            _encoded_epoch(index, seed, epoch)
            .map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .batch(batch_size)
        )

    epochs_left = tf.data.Dataset.range(first_epoch, epochs)
    return epochs_left.flat_map(one_epoch).prefetch(tf.data.AUTOTUNE)


def steps_per_epoch(index: SampleIndex, batch_size: int) -> int:
    return -(-len(index) // batch_size)


# Names a folder where each input pipeline of a multi-worker run lists the samples it read,
# per epoch (pipeline-<n>.jsonl): lets a test check that every worker read its share.
TRACE_VARIABLE = "IMGPIPE_INPUT_TRACE"


def replica_steps(size: int, batch_size: int, replicas: int) -> int:
    """Steps per epoch when each batch is cut into one piece per replica.

    As ``steps_per_epoch``, except that a last batch with fewer images than replicas is left
    out of the epoch: a replica with an empty piece would feed batch norm an empty batch.
    """
    full, rest = divmod(size, batch_size)
    return full + (rest >= replicas)


def pipeline_pieces(
    order: np.ndarray, batch_size: int, replicas: int, pipeline: int, pipelines: int
) -> list[np.ndarray]:
    """The sample numbers of each per-replica batch that one input pipeline feeds, in order.

    Batch k is what a one-replica run takes (``order[k * batch_size :][:batch_size]``), cut
    into ``replicas`` near-equal pieces; pipeline p feeds pieces p * r .. (p + 1) * r - 1
    of every batch (r = replicas // pipelines, the replicas of its worker), so the replicas
    together see exactly the one-replica run's batches.
    """
    local = replicas // pipelines
    steps = replica_steps(len(order), batch_size, replicas)
    pieces = []
    for step in range(steps):
        batch = order[step * batch_size : (step + 1) * batch_size]
        bounds = [(j * len(batch)) // replicas for j in range(replicas + 1)]
        pieces += [
            batch[bounds[j] : bounds[j + 1]]
            for j in range(pipeline * local, (pipeline + 1) * local)
        ]
    return pieces


def _trace(pipeline: int, epoch: int, pieces: list[np.ndarray]) -> None:
    folder = os.environ.get(TRACE_VARIABLE)
    if not folder:
        return
    samples = [int(i) for piece in pieces for i in piece]
    line = json.dumps({"pipeline": pipeline, "epoch": epoch, "samples": samples})
    with open(Path(folder) / f"pipeline-{pipeline}.jsonl", "a", encoding="utf-8") as handle:
        handle.write(line + "\n")


def replica_batches(
    index: SampleIndex,
    channels: int,
    size: tuple[int, int],
    batch_size: int,
    seed: int,
    epochs: range,
    replicas: int,
    pipeline: int = 0,
    pipelines: int = 1,
) -> tf.data.Dataset:
    """Per-replica batches of ``epochs`` for one input pipeline (one worker) of a cluster.

    Each worker reads and decodes only its own pieces (``pipeline_pieces``), so reading
    costs each worker its share of the epoch, not the whole of it.
    """
    decode = _decoder(channels, size)
    width, height = size

    @tf.autograph.experimental.do_not_convert
    def pieces(epoch_value):
        epoch = int(epoch_value)
        order = epoch_order(len(index), seed, epoch)
        mine = pipeline_pieces(order, batch_size, replicas, pipeline, pipelines)
        _trace(pipeline, epoch, mine)
        yield from _read_pieces(index, mine)

    def decode_piece(data, label):
        pixels = tf.map_fn(
            lambda one: decode(one, 0)[0],
            data,
            fn_output_signature=tf.TensorSpec((height, width, channels), tf.uint8),
        )
        return pixels, label

    def one_epoch(epoch):
        return tf.data.Dataset.from_generator(
            pieces,
            args=(epoch,),
            output_signature=(
                tf.TensorSpec(shape=(None,), dtype=tf.string),
                tf.TensorSpec(shape=(None,), dtype=tf.int64),
            ),
        ).map(decode_piece, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    epochs_left = tf.data.Dataset.range(epochs.start, epochs.stop)
    return epochs_left.flat_map(one_epoch).prefetch(tf.data.AUTOTUNE)

import io
import tarfile

from imgpipe.shards import SHARD_PATTERN, PackedImage, ShardWriter


def _tarfile_shards(directory, images, shard_size):
    """What tarfile itself writes for the same members: the bytes ShardWriter must match."""
    paths = []
    for start in range(0, len(images), shard_size):
        path = directory / SHARD_PATTERN.format(len(paths))
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as archive:
            for image in images[start : start + shard_size]:
                info = tarfile.TarInfo(f"{image.id}.{image.extension}")
                info.size, info.mtime, info.mode = len(image.data), 0, 0o644
                archive.addfile(info, io.BytesIO(image.data))
        paths.append(path)
    return paths


def test_shards_are_tarfile_bytes_and_places_slice_out_each_image(tmp_path):
    # Sizes on both sides of block boundaries, an empty member, a non-ASCII id, many blocks.
    sizes = [0, 1, 511, 512, 513, 1024, 10_000, 12_420, 70_000]
    images = [
        PackedImage(f"id{index:02d}é" if index == 3 else f"{index:016x}", bytes([index]) * size)
        for index, size in enumerate(sizes)
    ]
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir()
    theirs.mkdir()
    with ShardWriter(ours, shard_size=4) as writer:
        places = [writer.add(image) for image in images]
    expected = _tarfile_shards(theirs, images, 4)
    assert sorted(p.name for p in ours.iterdir()) == [p.name for p in expected]
    for path in expected:
        assert (ours / path.name).read_bytes() == path.read_bytes(), path.name
    for image, place in zip(images, places, strict=True):
        data = (ours / place["shard"]).read_bytes()
        assert data[place["offset"] : place["offset"] + place["length"]] == image.data

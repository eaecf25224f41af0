"""Archives made on the spot for tests: honest ones and ones built to attack an extractor."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile


def make_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def make_tar(members: dict[str, bytes], compression: str = "gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=f"w:{compression}") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def tar_with(kind: str, absolute: str = "/tmp/evil.png") -> bytes:
    """A .tar.gz with one honest image and one hostile member of ``kind``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        good = tarfile.TarInfo("cat/ok.png")
        good.size = 3
        archive.addfile(good, io.BytesIO(b"png"))
        names = {"traversal": "../../evil.png", "absolute": absolute}
        info = tarfile.TarInfo(names.get(kind, "cat/evil.png"))
        data = b"evil"
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        elif kind == "hardlink":
            info.type, info.linkname = tarfile.LNKTYPE, "/etc/passwd"
        elif kind == "device":
            info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
        elif kind == "fifo":
            info.type = tarfile.FIFOTYPE
        if info.type == tarfile.REGTYPE:
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        else:
            archive.addfile(info)
    return buffer.getvalue()


def zip_with(kind: str, absolute: str = "/tmp/evil.png") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("cat/ok.png", b"png")
        names = {"traversal": "../../evil.png", "absolute": absolute}
        name = names.get(kind, "cat/evil.png")
        info = zipfile.ZipInfo(name)
        info.create_system = 3  # unix, so the mode bits below are honoured
        if kind == "symlink":
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        elif kind == "device":
            info.external_attr = (stat.S_IFCHR | 0o644) << 16
        else:
            info.external_attr = (stat.S_IFREG | 0o644) << 16
        archive.writestr(info, b"/etc/passwd" if kind == "symlink" else b"evil")
    return buffer.getvalue()


def make_cifar(per_batch: int, binary: bool = False, seed: int = 0):
    """A CIFAR-10-format .tar.gz (python or binary layout) and the arrays it holds.

    Returns (archive bytes, {batch name: (labels, images as N x 3 x 32 x 32)}).
    """
    import pickle

    import numpy as np

    rng = np.random.default_rng(seed)
    batches = {}
    members = {}
    folder = "cifar-10-batches-bin" if binary else "cifar-10-batches-py"
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.integers(0, 10, per_batch)
        # Learnable: the red channel's mean says the class; the rest is noise.
        images = rng.integers(0, 80, (per_batch, 3, 32, 32), dtype=np.uint8)
        images[:, 0] += (labels * 17).astype(np.uint8)[:, None, None]
        batches[name] = (labels, images)
        flat = images.reshape(per_batch, -1)
        if binary:
            records = np.concatenate([labels.astype(np.uint8)[:, None], flat], axis=1)
            members[f"{folder}/{name}.bin"] = records.tobytes()
        else:
            batch = {
                b"batch_label": name.encode(),
                b"labels": [int(x) for x in labels],
                b"data": flat,
                b"filenames": [f"img_{i}.png".encode() for i in range(per_batch)],
            }
            members[f"{folder}/{name}"] = pickle.dumps(batch, protocol=2)
    if binary:
        members[f"{folder}/batches.meta.txt"] = b"airplane\nautomobile\n"
    else:
        members[f"{folder}/batches.meta"] = pickle.dumps({b"label_names": []}, protocol=2)
    return make_tar(members), batches


def overlap_zip(count: int, unpacked: int) -> bytes:
    """A zip bomb of overlapping entries (David Fifield's "quoted overlap" construction).

    One deflate blob of ``unpacked`` zeros sits at the end; each entry's compressed data starts
    with a stored deflate block that quotes the next entry's local header, then runs on
    through every later entry into the blob. Each entry is a valid deflate stream of its
    declared size and CRC, so a zip reader that does not compare entry spans unpacks the
    blob ``count`` times. Built byte by byte: no zip writer makes this.
    """
    import struct
    import zlib

    kernel = zlib.compressobj(9, zlib.DEFLATED, -15)
    blob = kernel.compress(bytes(unpacked)) + kernel.flush()
    names = [f"cat/{i:04d}.png".encode() for i in range(count)]
    # version, flags, method (8: deflate), time, date; then crc, sizes; then name/extra lengths
    common = (20, 0, 8, 0, 0)

    def local(name: bytes, crc: int, packed: int, size: int) -> bytes:
        fields = (b"PK\x03\x04", *common, crc, packed, size, len(name), 0)
        return struct.pack("<4s5H3L2H", *fields) + name

    def central(name: bytes, crc: int, packed: int, size: int, offset: int) -> bytes:
        fields = (b"PK\x01\x02", 20, *common, crc, packed, size, len(name), 0, 0, 0, 0, 0, offset)
        return struct.pack("<4s6H3L5H2L", *fields) + name

    def quote(header: bytes) -> bytes:  # a stored, non-final deflate block holding ``header``
        return struct.pack("<BHH", 0, len(header), 0xFFFF ^ len(header))

    # From the last entry back: each one unpacks to the next one's header, then its content.
    entries = [(zlib.crc32(bytes(unpacked)), len(blob), unpacked)]  # crc, packed, unpacked
    headers = [local(names[-1], *entries[0])]
    for name in reversed(names[:-1]):
        after = headers[0]
        _, packed, size = entries[0]
        crc = zlib.crc32(bytes(unpacked), zlib.crc32(b"".join(headers)))
        entries.insert(0, (crc, len(quote(after)) + len(after) + packed, len(after) + size))
        headers.insert(0, local(name, *entries[0]))
    body, offsets = bytearray(), []
    for header, following in zip(headers, [*headers[1:], None], strict=True):
        offsets.append(len(body))
        body += header + (quote(following) if following else b"")
    body += blob
    directory = b"".join(
        central(name, *entry, offset)
        for name, entry, offset in zip(names, entries, offsets, strict=True)
    )
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, len(directory), len(body), 0)
    return bytes(body) + directory + end


def tar_with_size(members: dict[str, bytes], name: str, declared: int, compression="") -> bytes:
    """A tar of ``members`` whose header for ``name`` declares ``declared`` bytes instead.

    The header's checksum is made to match, so only the size field lies.
    """
    import gzip

    data = bytearray(make_tar(members, ""))
    at = 0
    while data[at : at + 100].rstrip(b"\0").decode() != name:
        at += 512 + -(-int(data[at + 124 : at + 135], 8) // 512) * 512
    data[at + 124 : at + 136] = b"%011o\0" % declared
    data[at + 148 : at + 156] = b" " * 8
    data[at + 148 : at + 156] = b"%06o\0 " % sum(data[at : at + 512])
    return gzip.compress(bytes(data), mtime=0) if compression == "gz" else bytes(data)


def _zip_headers_of(data: bytearray, name: str):
    """(header offset, local?) of both headers of member ``name``: local, then central."""
    encoded = name.encode()
    for signature, name_at in ((b"PK\x03\x04", 30), (b"PK\x01\x02", 46)):
        at = data.find(signature)
        while data[at + name_at : at + name_at + len(encoded)] != encoded:
            at = data.find(signature, at + 1)
        yield at, signature == b"PK\x03\x04"


def encrypted_zip(members: dict[str, bytes], name: str) -> bytes:
    """A zip whose member ``name`` has the encryption flag set, in both of its headers."""
    data = bytearray(make_zip(members))
    for at, local in list(_zip_headers_of(data, name)):
        data[at + (6 if local else 8)] |= 0x1
    return bytes(data)


def zip_with_size(members: dict[str, bytes], name: str, declared: int) -> bytes:
    """A zip whose member ``name`` declares ``declared`` uncompressed bytes in both headers."""
    import struct

    data = bytearray(make_zip(members))
    for at, local in list(_zip_headers_of(data, name)):
        size_at = at + (22 if local else 24)
        data[size_at : size_at + 4] = struct.pack("<L", declared)
    return bytes(data)

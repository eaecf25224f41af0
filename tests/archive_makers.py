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

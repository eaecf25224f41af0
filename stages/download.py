"""download: fetch the configured source as it is, verified, into ``data/raw/``.

The default source, ``digits``, is the 8x8 handwritten digits that scikit-learn ships. They
are written as real PNG files, one folder per class, so every later stage sees exactly what
it would see from a user's folder of photos, and the pipeline runs with no network at all.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from imgpipe import atomic
from imgpipe.cli import StageError, run_main
from imgpipe.params import DownloadParams, load_params
from imgpipe.raw import SOURCE_FILE

log = logging.getLogger("imgpipe.download")

RAW_DIR = Path("data/raw")
DIGITS_MAX = 16  # scikit-learn's digits hold ink levels 0..16


def write_digits(out_dir: Path) -> dict[str, object]:
    """Write scikit-learn's digits as PNG files under ``out_dir/images/<class>/``."""
    from sklearn.datasets import load_digits  # imported here: only this source needs it

    digits = load_digits()
    # Scale 0..16 to 0..255 with rounding, so the full grey range is used and 16 maps to 255.
    pixels = np.rint(digits.images * (255.0 / DIGITS_MAX)).astype(np.uint8)
    class_names = [str(name) for name in digits.target_names]
    for name in class_names:
        (out_dir / "images" / name).mkdir(parents=True)
    for index, (image, target) in enumerate(zip(pixels, digits.target, strict=True)):
        path = out_dir / "images" / class_names[target] / f"digit-{index:04d}.png"
        Image.fromarray(image, mode="L").save(path, format="PNG", compress_level=6)
    return {
        "kind": "digits",
        "url": None,
        "path": "sklearn.datasets.load_digits",
        "sha256": hashlib.sha256(
            pixels.tobytes() + digits.target.astype(np.int64).tobytes()
        ).hexdigest(),
        "size": len(pixels),
        "class_names": class_names,
        "layout": "class_folders",
        "root": "images",
    }


def link_class_folders(folder: Path, out_dir: Path) -> dict[str, object]:
    """Hard-link (or, across filesystems, copy) a folder of class folders into ``out_dir``.

    DVC must see the images to notice when they change; hard links give it that without
    doubling the disk space of a large folder.
    """
    folder = folder.expanduser().resolve()
    if not folder.is_dir():
        raise StageError(
            f"download.path {str(folder)!r} is not a folder; point it at a folder "
            "holding one sub-folder of images per class"
        )
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise StageError(f"download.path {str(folder)!r} has no class sub-folders")
    digest, total = hashlib.sha256(), 0
    for class_dir in class_dirs:
        for path in sorted(p for p in class_dir.rglob("*") if p.is_file()):
            relative = path.relative_to(folder)
            target = out_dir / "images" / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:
                shutil.copy2(path, target)
            digest.update(relative.as_posix().encode() + b"\0" + str(path.stat().st_size).encode())
            total += 1
    return {
        "kind": "folder",
        "url": None,
        "path": str(folder),
        "sha256": digest.hexdigest(),  # of names and sizes: a listing fingerprint
        "size": total,
        "class_names": [p.name for p in class_dirs],
        "layout": "class_folders",
        "root": "images",
    }


def run(params: DownloadParams, raw_dir: Path) -> dict[str, object]:
    with atomic.atomic_dir(raw_dir) as scratch:
        if params.source == "folder":
            source = link_class_folders(Path(params.path), scratch)
        else:
            source = write_digits(scratch)
        atomic.write_json(scratch / SOURCE_FILE, source)
    log.info(
        "%s: %d images in %d classes", source["kind"], source["size"], len(source["class_names"])
    )
    return source


def main() -> None:
    run_main("download", lambda: run(load_params().download, RAW_DIR))


if __name__ == "__main__":
    main()

"""download: fetch the configured source as it is, verified, into ``data/raw/``.

Sources (``download.source``):

- ``digits``: the 8x8 handwritten digits that scikit-learn ships, written as real PNG files
  one folder per class, so the pipeline runs with no network at all;
- ``folder``: a local folder, labelled by class sub-folders or by a regular expression on
  file names; listed with each file's sha256, never copied;
- ``archive``: a .zip, .tar or .tar.gz from a URL or a local path, with its sha256;
- ``cifar10``: CIFAR-10 from its official URL (or a mirror), checked against its sha256;
- ``kaggle``: a competition's or dataset's file through the official ``kaggle`` package;
- ``crawl``: images found by keywords per class with icrawler's search-engine crawlers.

Downloaded files are verified before use and kept as they are: an archive stays an archive
(``prepare`` reads its members directly), because DVC tracks one file far faster than
thousands. ``data/raw/source.json`` records where everything came from.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

import numpy as np
from PIL import Image
from tqdm import tqdm

from imgpipe import atomic, cifar, crawl, kaggle_source
from imgpipe.archives import Archive, Limits, copy_file
from imgpipe.cli import run_main, worker_count
from imgpipe.errors import StageError
from imgpipe.fetch import FetchSettings, fetch, file_sha256, redact_url, verified_file
from imgpipe.labels import LabelRule, is_clutter
from imgpipe.params import DownloadParams, load_params
from imgpipe.raw import LISTING_COLUMNS, LISTING_FILE, SOURCE_FILE

log = logging.getLogger("imgpipe.download")

RAW_DIR = Path("data/raw")
# Outside data/raw, which DVC empties before the stage runs: partial downloads must survive
# to be resumed, and verified ones are reused instead of fetched again.
DOWNLOADS_DIR = Path(".downloads")
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


def _hash_file(path: Path) -> tuple[str, int] | str:
    """The file's sha256 and size, or why it cannot be read."""
    try:
        return file_sha256(path), path.stat().st_size
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"


def _not_a_file(path: Path) -> str | None:
    """Why a listed path holds no image bytes to read, or None for a regular file."""
    if path.is_file():
        return None
    if path.is_symlink():
        return "link to a folder, not followed" if path.is_dir() else "broken symbolic link"
    if path.is_dir():
        return ""  # a folder: its files are listed themselves
    return "not a regular file (device, pipe or socket)"


def _folder_classes(folder: Path) -> list[str]:
    """Class names from the class folders themselves, so an empty one is still a class."""
    return sorted(
        p.name
        for p in folder.iterdir()
        if p.is_dir() and not p.is_symlink() and not is_clutter(p.name)
    )


def list_folder(folder: Path, pattern: str | None, out_dir: Path) -> dict[str, object]:
    """List a local folder's images, their classes and sha256 in ``files.csv``; copy nothing.

    ``prepare`` reads the files in place and checks each against its listed sha256, so tens
    of thousands of photos are neither duplicated in the project nor in DVC's cache, and a
    file changed after this listing is refused rather than used unnoticed.

    ``folder`` is recorded as written: a path relative to the project (where DVC runs the
    stages) keeps ``source.json`` the same in every clone and on every machine.
    """
    written = Path(folder)
    folder = written.expanduser().resolve()
    if not folder.is_dir():
        raise StageError(
            f"download.path {str(folder)!r} is not a folder; point it at a folder holding one "
            "sub-folder of images per class, or images named by class with download.label_pattern"
        )
    rule = LabelRule(pattern=pattern, first_folder=True)
    rows, skipped = [], []
    found = {path.relative_to(folder).as_posix(): path for path in folder.rglob("*")}
    for relative, path in sorted(found.items()):
        problem = _not_a_file(path)
        if problem is not None:
            if problem:
                skipped.append({"path": relative, "reason": problem})
            continue
        label, reason = _label_or_reason(rule, relative)
        if label is None:
            skipped.append({"path": relative, "reason": reason})
        else:
            rows.append({"path": relative, "label": label})
    if not rows:
        what = "file name matches download.label_pattern" if pattern else "class sub-folders"
        raise StageError(f"download.path {str(folder)!r} has no images in {what}")
    # Every class seen, even if all its files are set aside below: prepare then reports it
    # with 0 images instead of the class vanishing without a word.
    class_names = sorted({row["label"] for row in rows}) if pattern else _folder_classes(folder)
    with ThreadPoolExecutor(worker_count(0) * 2) as pool:
        hashes = pool.map(_hash_file, (folder / row["path"] for row in rows))
        for row, hashed in tqdm(
            zip(rows, hashes, strict=True), total=len(rows), desc="hash", unit="file"
        ):
            if isinstance(hashed, str):
                skipped.append({"path": row["path"], "reason": hashed})
            else:
                row.update(sha256=hashed[0], size=hashed[1])
    rows = [row for row in rows if "sha256" in row]
    skipped.sort(key=lambda entry: entry["path"])
    if not rows:
        raise StageError(f"download.path {str(folder)!r}: none of its images can be read")
    _warn_empty(class_names, rows)
    _write_listing(out_dir / LISTING_FILE, rows)
    listing = hashlib.sha256((out_dir / LISTING_FILE).read_bytes()).hexdigest()
    return {
        "kind": "folder",
        "url": None,
        "path": written.as_posix(),
        "sha256": listing,  # of files.csv, which holds every file's own sha256
        "size": len(rows),
        "bytes": sum(row["size"] for row in rows),
        "class_names": class_names,
        "labels": rule.to_dict(),
        "layout": "folder",
        "listing": LISTING_FILE,
        "skipped": skipped,
    }


def _warn_empty(class_names: list[str], rows: list[dict]) -> None:
    empty = sorted(set(class_names) - {row["label"] for row in rows})
    if empty:
        log.warning(
            "class(es) %s hold no usable file; prepare will stop on them "
            "(see prepare.min_per_class)",
            ", ".join(map(repr, empty)),
        )


def _label_or_reason(rule: LabelRule, relative: str) -> tuple[str | None, str]:
    if is_clutter(relative):
        return None, "hidden or operating-system file"
    label = rule.label(relative)
    return label, "" if label else rule.describe(relative)


def _write_listing(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, LISTING_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic.write_text(path, buffer.getvalue())


def _file_name(url: str, fallback: str) -> str:
    name = Path(unquote(urlparse(url).path)).name
    return name if re.fullmatch(r"[\w][\w.+-]*", name or "") else fallback


def _limits(params: DownloadParams) -> Limits:
    return Limits(
        max_members=params.max_members, max_total_bytes=int(params.max_total_gb * 1024**3)
    )


def _fetch_or_verify(params: DownloadParams, downloads: Path, fallback: str):
    """The verified file: downloaded (or reused) for a URL, checked in place for a path."""
    if params.path:
        path = Path(params.path).expanduser().resolve()
        if not path.is_file():
            raise StageError(f"download.path {str(path)!r} is not a file")
        return verified_file(path, params.sha256, str(path))
    settings = FetchSettings(read_timeout=params.timeout, retries=params.retries)
    return fetch(params.url, downloads / _file_name(params.url, fallback), params.sha256, settings)


def _archive_rule(params: DownloadParams) -> LabelRule:
    return LabelRule(pattern=params.label_pattern, image_names_only=True)


def _sibling_classes(folders: list[str], labelled: set[str]) -> set[str]:
    """Names of the folders beside the class folders that hold images: classes too, even
    when empty or holding no image, so that such a class is counted rather than lost."""
    parents = {str(PurePosixPath(folder).parent) for folder in labelled}
    return {
        PurePosixPath(folder).name
        for folder in folders
        if str(PurePosixPath(folder).parent) in parents and not is_clutter(folder)
    }


def inspect_archive(path: Path, rule: LabelRule, limits: Limits) -> dict[str, object]:
    """Validate an archive and count its labelled members; refuse it if nothing is labelled."""
    with Archive(path, limits) as archive:
        archive.test_integrity()
        counts: dict[str, int] = {}
        skipped = []
        class_folders = set()
        for name in archive.names:
            label, reason = _label_or_reason(rule, name)
            if label is None:
                skipped.append({"path": name, "reason": reason})
            else:
                counts[label] = counts.get(label, 0) + 1
                class_folders.add(str(PurePosixPath(name).parent))
        if not rule.pattern:
            for name in _sibling_classes(archive.folders, class_folders):
                counts.setdefault(name, 0)
        total = archive.total_bytes()
        fmt = archive.format
    if not any(counts.values()):
        hint = (
            "no member name matches download.label_pattern"
            if rule.pattern
            else "no member sits in a class folder; set download.label_pattern to take "
            "classes from file names"
        )
        raise StageError(f"{path.name}: {hint}")
    return {
        "format": fmt,
        "size": sum(counts.values()),
        "unpacked_bytes": total,
        # Classes with 0 images are kept: prepare's min_per_class check names them.
        "class_names": sorted(counts),
        "counts": dict(sorted(counts.items())),
        "labels": rule.to_dict(),
        "skipped": skipped,
        "limits": {"max_members": limits.max_members, "max_total_bytes": limits.max_total_bytes},
    }


def _keep_archive(fetched, out_dir: Path, name: str, own_copy: bool) -> None:
    """Put the verified file into data/raw: hard-linked from our own downloads folder (no
    second copy of a large archive), copied from a user's file (so nothing DVC does to its
    output, such as making it read-only, can reach the user's original)."""
    if own_copy:
        copy_file(fetched.path, out_dir / name)
    else:
        shutil.copyfile(fetched.path, out_dir / name)


def download_archive(params: DownloadParams, out_dir: Path, downloads: Path) -> dict:
    fetched = _fetch_or_verify(params, downloads, "archive")
    name = fetched.path.name
    description = inspect_archive(fetched.path, _archive_rule(params), _limits(params))
    _keep_archive(fetched, out_dir, name, own_copy=not params.path)
    return {
        "kind": "archive",
        "url": redact_url(params.url),
        # As written: a path relative to the project reads the same in every clone.
        "path": None if params.url else Path(params.path).as_posix(),
        "sha256": fetched.sha256,
        "bytes": fetched.size,
        "layout": "archive",
        "archive": name,
        **description,
    }


def download_cifar10(params: DownloadParams, out_dir: Path, downloads: Path) -> dict:
    fetched = _fetch_or_verify(params, downloads, "cifar-10.tar.gz")
    limits = _limits(params)
    with Archive(fetched.path, limits) as archive:
        batches = cifar.read_batches(archive)
    _keep_archive(fetched, out_dir, fetched.path.name, own_copy=True)
    splits: dict[str, int] = {}
    for batch in batches:
        split = batch.split or "train"
        splits[split] = splits.get(split, 0) + len(batch.labels)
    return {
        "kind": "cifar10",
        "url": redact_url(params.url),
        "path": None,
        "sha256": fetched.sha256,
        "bytes": fetched.size,
        "size": sum(splits.values()),
        "class_names": list(cifar.CLASSES),
        "layout": "cifar10",
        "archive": fetched.path.name,
        "batches": [batch.name for batch in batches],
        # The source's own split: items of its test batch carry split="test".
        "splits": splits,
        "limits": {"max_members": limits.max_members, "max_total_bytes": limits.max_total_bytes},
    }


def download_kaggle(params: DownloadParams, out_dir: Path, downloads: Path) -> dict:
    ref = kaggle_source.KaggleRef(params.competition, params.dataset, params.file)
    path = kaggle_source.download(ref, downloads / "kaggle" / ref.folder_name)
    fetched = verified_file(path, params.sha256, f"Kaggle file {path.name}")
    description = inspect_archive(path, _archive_rule(params), _limits(params))
    _keep_archive(fetched, out_dir, path.name, own_copy=True)
    return {
        "kind": "kaggle",
        "url": ref.url,
        "path": None,
        "competition": ref.competition,
        "dataset": ref.dataset,
        "file": ref.file,
        "sha256": fetched.sha256,
        "bytes": fetched.size,
        "layout": "archive",
        "archive": path.name,
        **description,
    }


def download_crawl(params: DownloadParams, out_dir: Path, downloads: Path) -> dict:
    images_dir = out_dir / "images"
    found = crawl.crawl_classes(
        params.classes, params.engine, params.max_per_class, params.min_size, images_dir
    )
    counts = {label: sum(1 for f in found if f.label == label) for label in sorted(params.classes)}
    empty = [label for label, n in counts.items() if n == 0]
    if empty:
        raise StageError(
            f"the {params.engine} crawl found no usable image for {', '.join(map(repr, empty))}. "
            "Search engines cannot be reached from a closed network; otherwise try other "
            "keywords in download.classes or a smaller download.min_size."
        )
    images = [
        {"path": f"images/{f.label}/{f.file}", "url": f.url, "sha256": f.sha256} for f in found
    ]
    return {
        "kind": "crawl",
        "engine": params.engine,
        "url": None,
        "path": None,
        "keywords": {label: list(words) for label, words in sorted(params.classes.items())},
        "sha256": hashlib.sha256(
            "".join(f"{i['path']}\0{i['sha256']}\n" for i in images).encode()
        ).hexdigest(),
        "size": len(images),
        "class_names": sorted(params.classes),
        "counts": counts,
        "layout": "class_folders",
        "root": "images",
        "images": images,
    }


SOURCES = {
    "archive": download_archive,
    "cifar10": download_cifar10,
    "kaggle": download_kaggle,
    "crawl": download_crawl,
}


def run(
    params: DownloadParams, raw_dir: Path, downloads_dir: Path | None = None
) -> dict[str, object]:
    """Fetch ``params.source`` into ``raw_dir``.

    ``downloads_dir`` (by default beside ``raw_dir``) keeps partial and verified downloads
    between runs, so an interrupted download resumes and a finished one is not repeated.
    """
    raw_dir = Path(raw_dir)
    downloads = Path(downloads_dir or raw_dir.parent / DOWNLOADS_DIR.name)
    with atomic.atomic_dir(raw_dir) as scratch:
        if params.source == "digits":
            source = write_digits(scratch)
        elif params.source == "folder":
            source = list_folder(Path(params.path), params.label_pattern, scratch)
        else:
            source = SOURCES[params.source](params, scratch, downloads)
        atomic.write_json(scratch / SOURCE_FILE, source)
    log.info(
        "%s: %d images in %d classes", source["kind"], source["size"], len(source["class_names"])
    )
    return source


def main() -> None:
    run_main("download", lambda: run(load_params().download, RAW_DIR, DOWNLOADS_DIR))


if __name__ == "__main__":
    main()

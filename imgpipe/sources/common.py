"""What the download sources share: the ``Source`` interface, the keys every source reads, and
the class-folder and archive readers that more than one source uses.

Not a source itself; ``imgpipe.sources`` registers the modules beside it.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote, urlparse

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from imgpipe.archive_rules import MAX_MEMBER_BYTES, Limits
from imgpipe.archives import Archive
from imgpipe.errors import RawDataError, StageError
from imgpipe.fetch import fetch
from imgpipe.fetch_settings import (
    DEFAULT_DEADLINE,
    DEFAULT_MIN_RATE_KBPS,
    KB,
    RATE_WINDOW,
    FetchSettings,
)
from imgpipe.file_hash import Fetched
from imgpipe.labels import (
    CLUTTER,
    IGNORED_NAMES,
    LabelRule,
    archive_root,
    display_name,
    is_clutter,
    rule_for,
)
from imgpipe.raw import RawItem, read_order


class SourceParams(BaseModel):
    """``download`` keys that every source reads."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout: float = Field(60, gt=0, le=3600, description="seconds without data before a retry")
    retries: int = Field(5, ge=0, le=100)
    deadline: float = Field(
        DEFAULT_DEADLINE,
        gt=0,
        le=7 * 24 * 3600,
        description="seconds a whole download may take, retries and waits included",
    )
    min_rate_kbps: float = Field(
        DEFAULT_MIN_RATE_KBPS,
        ge=0,
        description=f"KB/s below which, over {RATE_WINDOW:g} s, a download is given up; 0: never",
    )


class ArchiveSourceParams(SourceParams):
    """``download`` keys of the sources that read an archive: the limits that stop bombs."""

    max_members: int = Field(1_000_000, ge=1, description="archives: most members accepted")
    max_total_gb: float = Field(64, gt=0, description="archives: most uncompressed bytes, in GB")
    max_member_mb: float = Field(
        MAX_MEMBER_BYTES / 1024**2,
        gt=0,
        description="archives: largest member read, in MB; a larger one is rejected as too_large",
    )


@dataclass(frozen=True)
class Source:
    """One download source: its params model, how it fills data/raw, how prepare reads it.

    ``fetch(params, out_dir, downloads_dir)`` writes into ``out_dir`` (a scratch folder that
    becomes data/raw) and returns what ``source.json`` records; ``downloads_dir`` keeps partial
    and verified downloads between runs. ``list_items(raw_dir, source_json)`` turns what fetch
    left into the images ``prepare`` reads, in any order.
    """

    name: str
    Params: type[SourceParams]
    fetch: Callable[[Any, Path, Path], dict[str, Any]]
    list_items: Callable[[Path, dict[str, Any]], list[RawItem]]


def _hex_digest(value: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise ValueError("must be 64 hexadecimal digits, as printed by `sha256sum FILE`")
    return value.lower()


def _compiles(value: str) -> str:
    try:
        compiled = re.compile(value)
    except re.error as err:
        raise ValueError(f"not a valid regular expression: {err}") from None
    if compiled.groups > 1:
        raise ValueError("use at most one group (the class); make others (?:...)")
    return value


Sha256 = Annotated[str, AfterValidator(_hex_digest)]
LabelPattern = Annotated[str, AfterValidator(_compiles)]


def limits(params: ArchiveSourceParams) -> Limits:
    return Limits(
        max_members=params.max_members,
        max_total_bytes=int(params.max_total_gb * 1024**3),
        max_member_bytes=int(params.max_member_mb * 1024**2),
    )


def limits_record(limits: Limits) -> dict[str, int]:
    """The limits as ``source.json`` records them, so prepare opens the archive the same way."""
    return {
        "max_members": limits.max_members,
        "max_total_bytes": limits.max_total_bytes,
        "max_member_bytes": limits.max_member_bytes,
    }


def _file_name(url: str, fallback: str) -> str:
    name = Path(unquote(urlparse(url).path)).name
    return name if re.fullmatch(r"[\w][\w.+-]*", name or "") else fallback


def download_url(
    params: SourceParams, url: str, sha256: str | None, downloads: Path, fallback: str
) -> Fetched:
    """The verified file at ``url``, downloaded into ``downloads`` (or reused from there)."""
    return fetch(url, downloads / _file_name(url, fallback), sha256, fetch_settings(params))


def fetch_settings(params: SourceParams) -> FetchSettings:
    """The bounds of a download, as the ``download`` keys set them."""
    return FetchSettings(
        read_timeout=params.timeout,
        retries=params.retries,
        deadline=params.deadline,
        min_rate=params.min_rate_kbps * KB,
    )


def keep_archive(fetched: Fetched, out_dir: Path, name: str) -> Fetched:
    """The verified file from our own downloads folder, hard-linked into data/raw (no second
    copy of a large archive). A user's own file goes through ``copy_hashed`` instead."""
    _link_or_copy(fetched.path, out_dir / name)
    return Fetched(out_dir / name, fetched.sha256, fetched.size)


def _link_or_copy(source: Path, target: Path) -> None:
    """Hard-link when possible (same filesystem, no extra space), else copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        target.hardlink_to(source)
    except OSError:
        shutil.copyfile(source, target)


def copy_hashed(source: Path, target: Path) -> Fetched:
    """Copy a user's file into ``target``, hashing the bytes as they are copied.

    One read: the checksum is that of the copy, even if the file is replaced or rewritten
    meanwhile, so checking it checks what prepare will read. A copy, never a link, so nothing
    DVC does to its output (making it read-only, say) can reach the user's original.
    """
    digest = hashlib.sha256()
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(source, "rb") as reader, open(target, "wb") as writer:
        while chunk := reader.read(1 << 20):
            digest.update(chunk)
            writer.write(chunk)
        size = writer.tell()
    return Fetched(target, digest.hexdigest(), size)


def label_or_reason(rule: LabelRule, relative: str) -> tuple[str | None, str | None, str]:
    """The file's class and its own split, or None, None and why it has no class."""
    if is_clutter(relative):
        return None, None, CLUTTER
    return rule.place(relative)


def archive_rule(label_pattern: str | None, archive: Archive) -> LabelRule:
    """The one rule (``imgpipe.labels``), rooted at the archive's top or its wrapping folder."""
    return rule_for(label_pattern, archive.folders, archive_root(archive.names))


def inspect_archive(path: Path, label_pattern: str | None, limits: Limits) -> dict[str, object]:
    """Validate an archive and count its labelled members; refuse it if nothing is labelled.

    Every regular member in a class folder is a candidate, whatever its name ends with:
    prepare decodes each and lists what is not an image as rejected ``not_image``.
    """
    with Archive(path, limits) as archive:
        archive.test_integrity()
        rule = archive_rule(label_pattern, archive)
        counts: dict[str, int] = {}
        splits: dict[str, int] = {}
        skipped = []
        for name in archive.names:
            label, split, reason = label_or_reason(rule, name)
            if label is None:
                skipped.append({"path": display_name(name), "reason": reason})
                continue
            label = display_name(label)
            counts[label] = counts.get(label, 0) + 1
            if split:
                splits[split] = splits.get(split, 0) + 1
        # Class folders holding nothing usable are classes too: counted, not lost.
        for folder in archive.folders:
            label = None if is_clutter(folder) else rule.folder_class(folder)
            if label is not None:
                counts.setdefault(display_name(label), 0)
        total = archive.total_bytes()
        fmt = archive.format
    if not any(counts.values()):
        hint = (
            "no member name matches download.label_pattern"
            if label_pattern
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
        **({"splits": dict(sorted(splits.items()))} if splits else {}),
        "skipped": skipped,
        "limits": limits_record(limits),
    }


def open_archive(raw_dir: Path, source: dict) -> Archive:
    """The archive that ``source.json`` names, opened with the limits it records."""
    path = raw_dir / source["archive"]
    if not path.is_file():
        raise RawDataError(f"{path} is missing: run `dvc repro -f download`")
    return Archive(path, Limits(**source.get("limits", {})))


def archive_items(raw_dir: Path, source: dict) -> list[RawItem]:
    """Every labelled member of the kept archive, read directly from it when asked."""
    archive = open_archive(raw_dir, source)
    # Found again from the archive, exactly as download found it.
    rule = archive_rule(source.get("labels", {}).get("pattern"), archive)
    named = []
    for name in archive.names:
        label, split, _ = label_or_reason(rule, name)
        if label is not None:
            item = RawItem(
                origin=f"{source['archive']}/{display_name(name)}",
                label=display_name(label),
                read=_member_reader(archive, name),
                split=split,
            )
            named.append((item, name))
    # prepare reads in this order: a .tar.gz is then streamed when its own order allows.
    archive.expect_reads(name for _, name in sorted(named, key=lambda pair: read_order(pair[0])))
    return [item for item, _ in named]


def _member_reader(archive: Archive, name: str) -> Callable[[], bytes]:
    return lambda: archive.read(name)


def class_folder_items(raw_dir: Path, source: dict) -> list[RawItem]:
    """Image files under ``<root>/<class>/`` inside data/raw, labelled by their class folder."""
    root = raw_dir / source["root"]
    if not root.is_dir():
        raise RawDataError(f"{root} is not a folder of class folders")
    items = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(class_dir.rglob("*")):
            if path.is_file() and path.name not in IGNORED_NAMES:
                items.append(
                    RawItem(
                        origin=path.relative_to(raw_dir).as_posix(),
                        label=class_dir.name,
                        read=path.read_bytes,
                        path=path,
                    )
                )
    return items

"""What the download sources share: the ``Source`` interface, the keys every source reads, and
the class-folder and archive readers that more than one source uses.

Not a source itself; ``imgpipe.sources`` registers the modules beside it.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Annotated, Any
from urllib.parse import unquote, urlparse

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from imgpipe.archives import Archive, Limits, copy_file
from imgpipe.errors import RawDataError, StageError
from imgpipe.fetch import Fetched, FetchSettings, fetch
from imgpipe.labels import IGNORED_NAMES, LabelRule, is_clutter
from imgpipe.raw import RawItem


class SourceParams(BaseModel):
    """``download`` keys that every source reads."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout: float = Field(60, gt=0, le=3600, description="seconds without data before a retry")
    retries: int = Field(5, ge=0, le=100)


class ArchiveSourceParams(SourceParams):
    """``download`` keys of the sources that read an archive: the limits that stop bombs."""

    max_members: int = Field(1_000_000, ge=1, description="archives: most members accepted")
    max_total_gb: float = Field(64, gt=0, description="archives: most uncompressed bytes, in GB")


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
        max_members=params.max_members, max_total_bytes=int(params.max_total_gb * 1024**3)
    )


def limits_record(limits: Limits) -> dict[str, int]:
    """The limits as ``source.json`` records them, so prepare opens the archive the same way."""
    return {"max_members": limits.max_members, "max_total_bytes": limits.max_total_bytes}


def _file_name(url: str, fallback: str) -> str:
    name = Path(unquote(urlparse(url).path)).name
    return name if re.fullmatch(r"[\w][\w.+-]*", name or "") else fallback


def download_url(
    params: SourceParams, url: str, sha256: str | None, downloads: Path, fallback: str
) -> Fetched:
    """The verified file at ``url``, downloaded into ``downloads`` (or reused from there)."""
    settings = FetchSettings(read_timeout=params.timeout, retries=params.retries)
    return fetch(url, downloads / _file_name(url, fallback), sha256, settings)


def keep_archive(fetched: Fetched, out_dir: Path, name: str, own_copy: bool) -> None:
    """Put the verified file into data/raw: hard-linked from our own downloads folder (no
    second copy of a large archive), copied from a user's file (so nothing DVC does to its
    output, such as making it read-only, can reach the user's original)."""
    if own_copy:
        copy_file(fetched.path, out_dir / name)
    else:
        shutil.copyfile(fetched.path, out_dir / name)


def label_or_reason(rule: LabelRule, relative: str) -> tuple[str | None, str]:
    """The file's class, or None and why it has none."""
    if is_clutter(relative):
        return None, "hidden or operating-system file"
    label = rule.label(relative)
    return label, "" if label else rule.describe(relative)


def archive_rule(label_pattern: str | None) -> LabelRule:
    return LabelRule(pattern=label_pattern, image_names_only=True)


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
            label, reason = label_or_reason(rule, name)
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
    rule = LabelRule.from_dict(source.get("labels", {}))
    items = []
    for name in archive.names:
        label = None if is_clutter(name) else rule.label(name)
        if label is not None:
            items.append(
                RawItem(
                    origin=f"{source['archive']}/{name}",
                    label=label,
                    read=_member_reader(archive, name),
                )
            )
    return items


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

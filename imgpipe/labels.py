"""Which class a file belongs to, and how a file's name is spelled in what is written.

One rule for every source and for ``predict``'s view of a folder, used both by ``download``
(to count classes and list what it sets aside) and by ``prepare`` (to label what it reads), so
the two can never disagree:

- the class is the first folder below the root; anything deeper is part of the file's path,
  never a class (``cat/sub/b.png`` is a ``cat``);
- a root holding ``train/`` and ``test/`` (and optionally ``val/``, ``valid/`` or
  ``validation/``; any letter case) is a root of split folders: the class is the first folder
  below the split folder, and the split folder gives the file's own split;
- with ``label_pattern`` the class is group 1 (or the whole match) of a search in the base name;
- a file directly in the root (a README) is in no class folder and is set aside.

The root is the folder itself for the folder source. For an archive it is the archive's top,
unless every member (hidden and operating-system files aside) lies in one top-level folder that
holds at least one sub-folder with a file in it (``pets/cat/1.jpg``, ``pets/dog/2.jpg``): that
one wrapping folder is skipped, once, and its sub-folders are the classes.

File names are bytes on Linux; those that are not valid UTF-8 reach Python as surrogate escapes,
which no JSON or CSV file can hold. They are written percent-escaped (see ``escape_name``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

# Files that operating systems leave beside images; never images themselves.
IGNORED_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}
IGNORED_FOLDERS = {"__MACOSX"}
# Split folder names (compared in lower case) and the split each stands for.
SPLIT_FOLDERS = {
    "train": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}
CLUTTER = "hidden or operating-system file"
NOT_IN_CLASS_FOLDER = "file is not inside a class folder"
NOT_IN_SPLIT_FOLDER = "file is not inside a split folder (train/, val/, test/)"
OUTSIDE_ROOT = "file is outside the archive's top folder"


def is_clutter(relative: str) -> bool:
    """Hidden files and folders, and what operating systems leave beside images."""
    path = PurePosixPath(relative)
    return path.name in IGNORED_NAMES or any(
        part.startswith(".") or part in IGNORED_FOLDERS for part in path.parts
    )


@dataclass(frozen=True)
class LabelRule:
    """Where the classes are: below ``root`` ("" for the top), below split folders when
    ``split_folders``, or in file names when ``pattern`` is set."""

    pattern: str | None = None
    root: str = ""
    split_folders: bool = False

    def place(self, relative: str) -> tuple[str | None, str | None, str]:
        """(class, the file's own split or None, ""), or (None, None, why it has no class)."""
        path = PurePosixPath(relative)
        parts = path.parts
        if self.root:
            top = PurePosixPath(self.root).parts
            if parts[: len(top)] != top:
                return None, None, OUTSIDE_ROOT
            parts = parts[len(top) :]
        split = None
        if self.split_folders:
            split = SPLIT_FOLDERS.get(parts[0].lower()) if len(parts) > 1 else None
            if split is None:
                return None, None, NOT_IN_SPLIT_FOLDER
            parts = parts[1:]
        if self.pattern is not None:
            match = re.search(self.pattern, path.name)
            if not match:
                return None, None, f"file name does not match {self.pattern!r}"
            return (match.group(1) if match.re.groups else match.group(0)), split, ""
        if len(parts) < 2:
            return None, None, NOT_IN_CLASS_FOLDER
        return parts[0], split, ""

    def label(self, relative: str) -> str | None:
        return self.place(relative)[0]

    def describe(self, relative: str) -> str:
        """Why ``relative`` has no label."""
        return self.place(relative)[2]

    def folder_class(self, folder: str) -> str | None:
        """The class a folder belongs to (a class folder or one below it), or None."""
        return None if self.pattern is not None else self.label(f"{folder}/x")

    def to_dict(self) -> dict[str, object]:
        # first_folder and image_names_only are what earlier rules recorded; written with
        # their one remaining value so that source.json, and data/raw's hash, keep their bytes.
        record: dict[str, object] = {
            "first_folder": True,
            "image_names_only": False,
            "pattern": self.pattern,
        }
        if self.root:
            record["root"] = self.root
        if self.split_folders:
            record["split_folders"] = True
        return record

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> LabelRule:
        return cls(
            pattern=data.get("pattern"),
            root=str(data.get("root") or ""),
            split_folders=bool(data.get("split_folders")),
        )


def has_split_folders(top_folders: Iterable[str]) -> bool:
    """Whether the root's folders are split folders: ``train`` and ``test`` at least."""
    splits = {SPLIT_FOLDERS.get(name.lower()) for name in top_folders if not is_clutter(name)}
    return {"train", "test"} <= splits


def archive_root(names: Iterable[str]) -> str:
    """The one folder wrapping every member (see the module's docstring), or "" for the top."""
    kept = [PurePosixPath(name).parts for name in names if not is_clutter(name)]
    tops = {parts[0] for parts in kept}
    if len(tops) == 1 and all(len(p) > 1 for p in kept) and any(len(p) > 2 for p in kept):
        return tops.pop()
    return ""


def rule_for(pattern: str | None, folders: Iterable[str], root: str = "") -> LabelRule:
    """The rule for a tree whose folders (paths from its top, "/"-separated) are ``folders``."""
    prefix = f"{root}/" if root else ""
    tops = {
        folder[len(prefix) :].split("/")[0]
        for folder in folders
        if folder.startswith(prefix) and folder != root
    }
    return LabelRule(pattern=pattern, root=root, split_folders=has_split_folders(tops))


def has_undecodable(name: str) -> bool:
    """Whether the name holds bytes that are not UTF-8 (surrogate escapes in Python)."""
    return any("\udc80" <= char <= "\udcff" for char in name)


def escape_name(name: str) -> str:
    """``%`` as ``%25`` and every byte that is not UTF-8 as ``%XX``: valid UTF-8, reversible."""
    escaped = name.replace("%", "%25")
    return "".join(f"%{ord(c) - 0xDC00:02X}" if "\udc80" <= c <= "\udcff" else c for c in escaped)


def unescape_name(spelled: str) -> str:
    """The name ``escape_name`` spelled, with its undecodable bytes back."""

    def byte(match: re.Match) -> str:
        value = int(match.group(1), 16)
        return "%" if value == 0x25 else chr(0xDC00 + value)

    return re.sub(r"%(25|[89A-F][0-9A-F])", byte, spelled)


def display_name(name: str) -> str:
    """The name as written in reports: itself, or escaped if it holds undecodable bytes."""
    return escape_name(name) if has_undecodable(name) else name

"""Which class a file belongs to: its folder, or a regular expression on its name.

One rule, used both by ``download`` (to count classes and list what it skips) and by
``prepare`` (to label what it reads), so the two can never disagree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

# Files that operating systems leave beside images; never images themselves.
IGNORED_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}
IGNORED_FOLDERS = {"__MACOSX"}
IMAGE_SUFFIXES = {
    ".jpg",
    ".jpeg",
    ".jpe",
    ".png",
    ".gif",
    ".bmp",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
    ".pbm",
}


def is_clutter(relative: str) -> bool:
    """Hidden files and folders, and what operating systems leave beside images."""
    path = PurePosixPath(relative)
    return path.name in IGNORED_NAMES or any(
        part.startswith(".") or part in IGNORED_FOLDERS for part in path.parts
    )


@dataclass(frozen=True)
class LabelRule:
    """``pattern`` set: group 1 (or the whole match) of a search in the file's base name.

    Otherwise the class is a folder name: the first folder of the path when ``first_folder``
    (a folder of class folders, images possibly nested below), else the file's own folder.
    ``image_names_only`` skips files whose name does not end like an image (an archive's
    README would otherwise become a class of its own).
    """

    pattern: str | None = None
    first_folder: bool = False
    image_names_only: bool = False

    def label(self, relative: str) -> str | None:
        path = PurePosixPath(relative)
        if self.image_names_only and path.suffix.lower() not in IMAGE_SUFFIXES:
            return None
        if self.pattern is not None:
            match = re.search(self.pattern, path.name)
            if not match:
                return None
            return match.group(1) if match.re.groups else match.group(0)
        if len(path.parts) < 2:
            return None
        return path.parts[0] if self.first_folder else path.parts[-2]

    def describe(self, relative: str) -> str:
        """Why ``relative`` has no label."""
        suffix = PurePosixPath(relative).suffix.lower()
        if self.image_names_only and suffix not in IMAGE_SUFFIXES:
            return (
                "file name does not end like an image (" + ", ".join(sorted(IMAGE_SUFFIXES)) + ")"
            )
        if self.pattern is not None:
            return f"file name does not match {self.pattern!r}"
        return "file is not inside a class folder"

    def to_dict(self) -> dict[str, object]:
        return {
            "pattern": self.pattern,
            "first_folder": self.first_folder,
            "image_names_only": self.image_names_only,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> LabelRule:
        return cls(
            pattern=data.get("pattern"),
            first_folder=bool(data.get("first_folder")),
            image_names_only=bool(data.get("image_names_only")),
        )

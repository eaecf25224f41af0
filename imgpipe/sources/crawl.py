"""Images found by keywords per class with icrawler's search-engine crawlers (Bing or Google),
stored as files one folder per class, each named by its content and recorded with its URL.

icrawler is imported only when a crawl runs (``imgpipe.crawl`` holds the crawler), so reading
params never loads it.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from imgpipe.errors import StageError
from imgpipe.images import pixel_size
from imgpipe.sources.common import Source, SourceParams, class_folder_items, fetch_settings

MinSize = pixel_size(10_000)


class CrawlParams(SourceParams):
    source: Literal["crawl"] = "crawl"
    classes: dict[str, list[str]] = Field(description="class name -> search keywords")
    engine: Literal["bing", "google"] = "bing"
    max_per_class: int = Field(100, ge=1, le=10_000)
    min_size: MinSize = Field((64, 64), description="smallest width, height kept")

    @field_validator("classes")
    @classmethod
    def _keywords(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        if len(value) < 2:
            raise ValueError("name at least two classes, each with its search keywords")
        for name, keywords in value.items():
            if not re.fullmatch(r"[\w][\w .-]*", name):
                raise ValueError(f"class name {name!r} must be letters, digits, _ - . or space")
            if not keywords or not all(k.strip() for k in keywords):
                raise ValueError(f"class {name!r} needs at least one non-empty keyword")
        return value


def fetch(params: CrawlParams, out_dir: Path, downloads_dir: Path) -> dict[str, object]:
    from imgpipe import crawl  # imports icrawler

    found = crawl.crawl_classes(
        params.classes,
        params.engine,
        params.max_per_class,
        params.min_size,
        out_dir / "images",
        fetch_settings(params),
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


SOURCE = Source("crawl", CrawlParams, fetch, class_folder_items)

"""Images found by keywords with icrawler's search-engine crawlers, one folder per class.

icrawler finds image URLs (Bing or Google) and downloads them; the downloader here names each
file by its content's sha256, so a run gives the same names for the same images and a picture
found twice (under two keywords, or two classes) is kept once, under the first class that
found it. The URL each image came from is recorded for ``source.json``. Imported only when a
crawl runs (by ``imgpipe.sources.crawl``), since importing icrawler is slow.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from icrawler import ImageDownloader

log = logging.getLogger("imgpipe.crawl")


@dataclass(frozen=True)
class Found:
    label: str
    url: str
    sha256: str
    file: str  # name inside the class folder


class Registry:
    """What every crawler thread has kept so far, keyed by content hash."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_hash: dict[str, Found] = {}
        self.label = ""

    def claim(self, sha256: str, url: str, file: str) -> bool:
        with self.lock:
            if sha256 in self.by_hash:
                return False
            self.by_hash[sha256] = Found(self.label, url, sha256, file)
            return True


class RecordingDownloader(ImageDownloader):
    """icrawler's image downloader, with content-hash names, de-duplication and URL records."""

    def __init__(self, thread_num, signal, session, storage, registry: Registry) -> None:
        super().__init__(thread_num, signal, session, storage)
        self.registry = registry

    def keep_file(self, task, response, min_size=None, max_size=None):
        if not super().keep_file(task, response, min_size=min_size, max_size=max_size):
            return False
        digest = hashlib.sha256(response.content).hexdigest()
        task["sha256"] = digest
        file = self._name(task, digest)
        if not self.registry.claim(digest, task["file_url"], file):
            log.info("dropping a duplicate image from %s", task["file_url"])
            return False
        return True

    def get_filename(self, task, default_ext):
        # Only called for a kept file (overwrite=True skips the name check before download).
        return self._name(task, task["sha256"])

    def _name(self, task, digest: str) -> str:
        extension = super().get_filename(task, "jpg").rsplit(".", 1)[-1].lower()
        return f"{digest[:16]}.{extension}"


# (root_dir, registry, keyword, max_num, min_size) -> None; crawls one keyword into root_dir.
CrawlFunction = Callable[[Path, Registry, str, int, tuple[int, int]], None]


def _search_engine(crawler_name: str) -> CrawlFunction:
    def crawl(
        root: Path, registry: Registry, keyword: str, max_num: int, min_size: tuple[int, int]
    ) -> None:
        from icrawler import builtin

        crawler = getattr(builtin, crawler_name)(
            downloader_cls=RecordingDownloader,
            downloader_threads=4,
            storage={"root_dir": str(root)},
            log_level=logging.WARNING,
            extra_downloader_args={"registry": registry},
        )
        crawler.crawl(keyword=keyword, max_num=max_num, min_size=min_size, overwrite=True)

    return crawl


ENGINES: dict[str, CrawlFunction] = {
    "bing": _search_engine("BingImageCrawler"),
    "google": _search_engine("GoogleImageCrawler"),
}


def crawl_classes(
    classes: dict[str, list[str]],
    engine: str,
    max_per_class: int,
    min_size: tuple[int, int],
    images_dir: Path,
) -> list[Found]:
    """Crawl every class's keywords in turn until it has ``max_per_class`` new images."""
    registry = Registry()
    crawl = ENGINES[engine]
    for label in sorted(classes):
        registry.label = label
        root = images_dir / label
        root.mkdir(parents=True, exist_ok=True)
        for keyword in classes[label]:
            have = sum(1 for f in registry.by_hash.values() if f.label == label)
            if have >= max_per_class:
                break
            log.info("%s: searching %s for %r", label, engine, keyword)
            crawl(root, registry, keyword, max_per_class - have, tuple(min_size))
    found = sorted(registry.by_hash.values(), key=lambda f: (f.label, f.file))
    kept, per_label = [], dict.fromkeys(classes, 0)
    for item in found:
        path = images_dir / item.label / item.file
        if not path.is_file():
            continue
        # icrawler's downloader threads can each pass its max_num check at once and overshoot;
        # the cap is applied here, keeping the first files by (content-hash) name.
        if per_label[item.label] >= max_per_class:
            path.unlink()
            continue
        per_label[item.label] += 1
        kept.append(item)
    return kept

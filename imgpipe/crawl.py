"""Images found by keywords with icrawler's search-engine crawlers, one folder per class.

icrawler finds image URLs (Bing or Google) and downloads them; the downloader here names each
file by its content's sha256, so a run gives the same names for the same images and a picture
found twice (under two keywords, or two classes) is kept once, under the first class that
found it. The URL each image came from is recorded for ``source.json``, its credentials
hidden. Imported only when a crawl runs (by ``imgpipe.sources.crawl``), since importing
icrawler is slow.

Each image is fetched by ``imgpipe.fetch`` rather than by icrawler, because a search result
can point anywhere: a result URL, and every redirect from it, may reach only public
addresses (never this machine, its network or the cloud's metadata service), each image is
bounded in size and by the download's rate floor, and the whole crawl by
``download.deadline``. An image that fails is skipped with a log line naming its URL
(redacted); a crawl that runs out of time stops with a message.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from icrawler import ImageDownloader
from PIL import Image

from imgpipe.errors import StageError
from imgpipe.fetch import fetch_bytes
from imgpipe.fetch_errors import DeadlineExceeded, FetchError
from imgpipe.fetch_settings import FetchSettings
from imgpipe.redact import redact_url

log = logging.getLogger("imgpipe.crawl")

# Larger than any photo a search engine returns; larger files are not images worth the wait.
MAX_IMAGE_BYTES = 64 << 20


@dataclass(frozen=True)
class Found:
    label: str
    url: str
    sha256: str
    file: str  # name inside the class folder


class Registry:
    """What every crawler thread shares: the images kept so far, keyed by content hash, and
    the bounds of each image's download (``settings``) and of the whole crawl."""

    def __init__(self, settings: FetchSettings) -> None:
        self.lock = threading.Lock()
        self.by_hash: dict[str, Found] = {}
        self.label = ""
        self.settings = settings
        self.deadline_at = time.monotonic() + settings.deadline
        self.expired = False  # the crawl ran past the deadline

    def claim(self, sha256: str, url: str, file: str) -> bool:
        with self.lock:
            if sha256 in self.by_hash:
                return False
            self.by_hash[sha256] = Found(self.label, redact_url(url), sha256, file)
            return True

    def image_settings(self) -> FetchSettings | None:
        """One image's bounds: no retries (other results stand in), what remains of the
        crawl's deadline; None once that is spent."""
        remaining = self.deadline_at - time.monotonic()
        if remaining <= 0:
            self.expired = True
            return None
        return replace(self.settings, retries=0, deadline=remaining, max_bytes=MAX_IMAGE_BYTES)


class RecordingDownloader(ImageDownloader):
    """icrawler's image downloader, with content-hash names, de-duplication and URL records,
    fetching through ``imgpipe.fetch``.

    ``user_urls`` says the URLs are the user's own (a list they gave), which may be on their
    own machine or network like any download.url; a search engine's results may not.
    """

    def __init__(
        self, thread_num, signal, session, storage, registry: Registry, user_urls: bool = False
    ) -> None:
        super().__init__(thread_num, signal, session, storage)
        self.registry = registry
        self.user_urls = user_urls

    def download(self, task, default_ext, timeout=5, max_retry=3, overwrite=False, **kwargs):
        """Fetch, check and store one image; icrawler's own request options are not used."""
        task["success"], task["filename"] = False, None
        settings = self.registry.image_settings()
        if settings is None or self.signal.get("reach_max_num"):
            self.signal.set(reach_max_num=True)
            return False
        try:
            data = fetch_bytes(task["file_url"], settings, user_url=self.user_urls)
        except DeadlineExceeded:
            self.registry.expired = True
            self.signal.set(reach_max_num=True)
            return False
        except FetchError as err:
            log.info("skipping an image: %s", err)
            return False
        if self.reach_max_num():
            self.signal.set(reach_max_num=True)
            return False
        if not self.keep_image(task, data, **kwargs):
            return False
        with self.lock:
            self.fetched_num += 1
            filename = self.get_filename(task, default_ext)
        self.storage.write(filename, data)
        task["success"], task["filename"] = True, filename
        return True

    def keep_image(self, task, data: bytes, min_size=None, max_size=None, **_) -> bool:
        """An image Pillow can size, within the size limits, not kept before."""
        shown = redact_url(task["file_url"])
        try:
            size = Image.open(io.BytesIO(data)).size
        except Exception:  # anything at all from a stranger's file: not an image we keep
            log.info("skipping %s: not an image Pillow can read", shown)
            return False
        if (min_size and not self._size_gt(size, min_size)) or (
            max_size and not self._size_lt(size, max_size)
        ):
            return False
        digest = hashlib.sha256(data).hexdigest()
        task["sha256"] = digest
        file = self._name(task, digest)
        if not self.registry.claim(digest, task["file_url"], file):
            log.info("dropping a duplicate image from %s", shown)
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
    settings: FetchSettings,
) -> list[Found]:
    """Crawl every class's keywords in turn until it has ``max_per_class`` new images, each
    image fetched within ``settings``, all of them within its deadline."""
    registry = Registry(settings)
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
            if registry.expired:
                raise StageError(
                    f"the {engine} crawl did not finish within download.deadline "
                    f"({settings.deadline:g} s), at class {label!r}, keyword {keyword!r}. Raise "
                    "download.deadline, or ask for fewer images (download.max_per_class)."
                )
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

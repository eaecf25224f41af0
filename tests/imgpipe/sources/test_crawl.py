"""The crawl source: images found by keywords, each kept once and named by its content."""

import json
import logging
import time

import pytest

from imgpipe import crawl
from imgpipe.errors import StageError
from imgpipe.fetch_settings import FetchSettings
from imgpipe.params import parse_params
from imgpipe.raw import list_items
from stages import download
from tests.conftest import layout_of
from tests.imgpipe.sources.helpers import png, run_pipeline


def url_list_engine(urls_by_keyword, user_urls=True):
    """icrawler's own URL-list feeder and parser in place of a search engine; the download
    path (our downloader, icrawler's threads and storage) is the real one. ``user_urls``:
    the list is the user's own, so it may point at 127.0.0.1; ``False`` treats it as a
    search engine's results."""

    def crawl_keyword(root, registry, keyword, max_num, min_size):
        from icrawler import Crawler, UrlListFeeder
        from icrawler.builtin.urllist import PseudoParser

        crawler = Crawler(
            feeder_cls=UrlListFeeder,
            parser_cls=PseudoParser,
            downloader_cls=crawl.RecordingDownloader,
            downloader_threads=2,
            storage={"root_dir": str(root)},
            log_level=logging.WARNING,
            extra_downloader_args={"registry": registry, "user_urls": user_urls},
        )
        crawler.crawl(
            feeder_kwargs={"url_list": urls_by_keyword[keyword]},
            parser_kwargs={"queue_timeout": 0.2},
            downloader_kwargs={
                "max_num": max_num,
                "min_size": min_size,
                "overwrite": True,
                "queue_timeout": 0.2,
            },
        )

    return crawl_keyword


@pytest.fixture
def crawl_server(server, monkeypatch):
    files = {
        f"/img/{name}{i}.png": png(k, i, (40, 40)) for k, name in enumerate("ab") for i in range(12)
    }
    files["/img/tiny.png"] = png(0, 99, (8, 8))
    files["/img/page.html"] = b"<html>not an image</html>"
    server.behaviour.files.update(files)
    urls = {
        "apples": [server.url(f"/img/a{i}.png") for i in range(12)]
        + [server.url("/img/tiny.png"), server.url("/img/page.html"), server.url("/img/gone.png")],
        # a0 again under another keyword and class: a duplicate, kept once, in class "a"
        "bananas": [server.url(f"/img/b{i}.png") for i in range(12)] + [server.url("/img/a0.png")],
    }
    monkeypatch.setitem(crawl.ENGINES, "bing", url_list_engine(urls))
    return server


CRAWL = {"source": "crawl", "classes": {"a": ["apples"], "b": ["bananas"]}, "min_size": [16, 16]}


def test_crawl_keeps_each_image_once_named_by_content_with_its_url(crawl_server, tmp_path):
    params = parse_params({"download": CRAWL}).download
    source = download.run(params, layout_of(tmp_path, raw=tmp_path / "raw"))
    assert source["counts"] == {"a": 12, "b": 12}
    images = {i["url"].rsplit("/", 1)[-1]: i for i in source["images"]}
    assert "tiny.png" not in images and "page.html" not in images
    a0 = images["a0.png"]
    assert a0["path"] == f"images/a/{a0['sha256'][:16]}.png"
    assert (tmp_path / "raw" / a0["path"]).read_bytes() == crawl_server.behaviour.files[
        "/img/a0.png"
    ]
    assert len(list((tmp_path / "raw" / "images" / "b").iterdir())) == 12
    items, classes = list_items(tmp_path / "raw")
    assert classes == ["a", "b"] and len(items) == 24


def test_crawl_max_per_class_is_respected(crawl_server, tmp_path):
    params = parse_params({"download": {**CRAWL, "max_per_class": 5}}).download
    source = download.run(params, layout_of(tmp_path, raw=tmp_path / "raw"))
    assert source["counts"] == {"a": 5, "b": 5}


def test_crawl_finding_nothing_mentions_closed_networks(server, tmp_path, monkeypatch):
    monkeypatch.setitem(
        crawl.ENGINES,
        "bing",
        url_list_engine({"apples": [server.url("/x.png")], "bananas": [server.url("/y.png")]}),
    )
    with pytest.raises(StageError, match="closed network"):
        download.run(
            parse_params({"download": CRAWL}).download, layout_of(tmp_path, raw=tmp_path / "raw")
        )
    assert not (tmp_path / "raw").exists()


def test_crawl_source_to_a_trained_model(crawl_server, tmp_path):
    download.run(
        parse_params({"download": CRAWL}).download, layout_of(tmp_path, raw=tmp_path / "raw")
    )
    run_pipeline(tmp_path / "raw", tmp_path, ["a", "b"])


def test_crawled_urls_are_bounded_checked_and_never_shown_with_credentials(
    server, tmp_path, monkeypatch, caplog
):
    caplog.set_level(logging.INFO, logger="imgpipe")
    server.behaviour.files.update(
        {
            f"/img/{name}{i}.png": png(k, i, (40, 40))
            for k, name in enumerate("ab")
            for i in range(3)
        }
    )
    server.behaviour.routes[("GET", "/img/meta.png")] = (
        302,
        {"Location": "http://169.254.169.254/latest/meta-data/"},
        b"",
    )

    def drip(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", "100000")
        handler.end_headers()
        while not handler.behaviour.closing.wait(0.5):
            handler.wfile.write(b"x")
            handler.wfile.flush()

    server.behaviour.handlers["/img/drip.png"] = drip
    signed = server.url("/img/a0.png?sig=S3CRET").replace("http://", "http://me:pa55@")
    urls = {
        "apples": [
            signed,
            server.url("/img/a1.png"),
            server.url("/img/a2.png"),
            server.url("/img/meta.png?token=T0KEN"),
            server.url("/img/drip.png"),
        ],
        "bananas": [server.url(f"/img/b{i}.png") for i in range(3)],
    }
    monkeypatch.setitem(crawl.ENGINES, "bing", url_list_engine(urls))
    raw = {**CRAWL, "min_rate_kbps": 1}
    params = parse_params({"download": raw}).download
    started = time.monotonic()
    with monkeypatch.context() as patch:
        patch.setattr(crawl, "MAX_IMAGE_BYTES", 50_000)  # the drip announces 100 kB: refused
        source = download.run(params, layout_of(tmp_path, raw=tmp_path / "raw"))
    assert time.monotonic() - started < 5
    assert source["counts"] == {"a": 3, "b": 3}
    recorded = {i["url"] for i in source["images"]}
    assert server.url("/img/a0.png?sig=***").replace("http://", "http://***@") in recorded
    assert "refused to follow its redirect to http://169.254.169.254/" in caplog.text
    assert "meta.png?token=***" in caplog.text
    assert "drip.png is 100000 bytes, more than the 50000 accepted" in caplog.text
    written = json.dumps(source) + caplog.text
    for secret in ("S3CRET", "pa55", "T0KEN"):
        assert secret not in written


def test_search_results_may_not_lead_to_this_machine(crawl_server, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="imgpipe")
    engine = url_list_engine({"apples": [crawl_server.url("/img/a0.png")]}, user_urls=False)
    registry = crawl.Registry(FetchSettings())
    engine(tmp_path, registry, "apples", 5, (16, 16))
    assert registry.by_hash == {}
    assert "127.0.0.1 is a loopback address, and the URL given was on a public one" in caplog.text
    assert crawl_server.behaviour.requests == []


def test_a_crawl_past_its_deadline_stops_with_a_message(crawl_server, tmp_path):
    params = parse_params({"download": {**CRAWL, "deadline": 0.001}}).download
    with pytest.raises(StageError, match=r"did not finish within download.deadline \(0.001 s\)"):
        download.run(params, layout_of(tmp_path, raw=tmp_path / "raw"))

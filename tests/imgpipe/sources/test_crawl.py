"""The crawl source: images found by keywords, each kept once and named by its content."""

import logging

import pytest

from imgpipe import crawl
from imgpipe.errors import StageError
from imgpipe.params import parse_params
from imgpipe.raw import list_items
from stages import download
from tests.conftest import layout_of
from tests.imgpipe.sources.helpers import png, run_pipeline


def url_list_engine(urls_by_keyword):
    """icrawler's own URL-list feeder and parser in place of a search engine; the download
    path (our downloader, icrawler's threads and storage) is the real one."""

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
            extra_downloader_args={"registry": registry},
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

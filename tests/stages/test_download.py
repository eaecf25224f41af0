"""The download stage: the source it names fetched into data/raw whole, with source.json."""

import json
from dataclasses import replace

import pytest

from imgpipe.errors import StageError
from imgpipe.layout import Layout
from imgpipe.params import ParamsError, parse_params
from imgpipe.sources import SOURCES
from stages import download
from tests.archive_makers import make_zip
from tests.conftest import layout_of
from tests.imgpipe.sources.helpers import dl_params, png, sha


def test_rerun_replaces_output_and_leaves_no_scratch(tmp_path):
    raw = tmp_path / "raw"
    download.run(dl_params(), layout_of(tmp_path, raw=raw))
    (raw / "stale.txt").write_text("from an older run")
    download.run(dl_params(), layout_of(tmp_path, raw=raw))
    assert not (raw / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


# --- params ---------------------------------------------------------------------------


def test_keys_another_source_reads_are_refused():
    with pytest.raises(ParamsError) as err:
        parse_params({"download": {"source": "folder", "path": "x", "url": "http://x"}})
    message = str(err.value)
    assert "download.url: unknown key; source 'folder' reads: path, label_pattern," in message
    assert "download.folder" not in message  # pydantic's union tag stays out of the key
    with pytest.raises(ParamsError, match=r"download.sha256: missing; source 'archive' needs it"):
        parse_params({"download": {"source": "archive", "url": "http://127.0.0.1/a.zip"}})
    with pytest.raises(ParamsError, match=r"download.path: missing; source 'folder' needs it"):
        parse_params({"download": {"source": "folder"}})
    with pytest.raises(ParamsError, match=r"download: .*exactly one of download.url, download.p"):
        parse_params({"download": {"source": "archive", "sha256": "a" * 64}})
    with pytest.raises(ParamsError, match="at most one group"):
        parse_params({"download": {"source": "folder", "path": "x", "label_pattern": "(a)(b)"}})
    with pytest.raises(ParamsError, match=r"download.dataset: .*owner/name"):
        parse_params({"download": {"source": "kaggle", "dataset": "no-owner"}})
    with pytest.raises(ParamsError, match=r"exactly one of download\.competition"):
        parse_params({"download": {"source": "kaggle", "dataset": "a/b", "competition": "c"}})
    with pytest.raises(ParamsError, match=r"download.classes: .*at least two classes"):
        parse_params({"download": {"source": "crawl", "classes": {"a": ["apples"]}}})


def test_archive_limits_are_refused_where_no_archive_is_read():
    with pytest.raises(ParamsError) as err:
        parse_params({"download": {"source": "crawl", "classes": {}, "max_members": 5}})
    assert "download.max_members: unknown key; source 'crawl' reads: classes, engine" in str(
        err.value
    )
    params = parse_params({"download": {"source": "cifar10", "max_members": 5}}).download
    assert params.max_members == 5


def test_unknown_source_lists_the_sources_and_no_message_echoes_a_section():
    with pytest.raises(ParamsError) as err:
        parse_params({"download": {"source": "ftp", "url": "ftp://x/secret-path"}})
    message = str(err.value)
    assert "download.source: unknown source 'ftp'; one of: digits, folder, archive," in message
    assert "secret-path" not in message
    with pytest.raises(ParamsError) as err:
        parse_params({"download": {"source": "archive", "url": "http://x/secret-path"}})
    assert "secret-path" not in str(err.value)


def test_download_without_source_is_digits():
    assert parse_params({}).download.source == "digits"
    assert parse_params({"download": {}}).download.source == "digits"
    assert parse_params({"download": {"retries": 2}}).download.retries == 2
    with pytest.raises(ParamsError, match=r"download.path: unknown key; source 'digits' reads"):
        parse_params({"download": {"path": "photos"}})


def test_run_fetches_the_named_source_into_raw_with_its_source_json(tmp_path, monkeypatch):
    calls = []

    def fetch(params, out_dir, downloads_dir):
        calls.append((params.source, downloads_dir))
        (out_dir / "a.txt").write_text("fetched")
        return {"kind": "fake", "size": 1, "class_names": ["a", "b"]}

    fake = replace(SOURCES["digits"], fetch=fetch)
    monkeypatch.setitem(download.SOURCES, "digits", fake)
    layout = layout_of(tmp_path, raw=tmp_path / "raw", downloads=tmp_path / "dl")
    record = download.run(dl_params(), layout)
    assert record == {"kind": "fake", "size": 1, "class_names": ["a", "b"]}
    assert calls == [("digits", tmp_path / "dl")]
    assert json.loads((tmp_path / "raw" / "source.json").read_text()) == record
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_failed_fetch_keeps_the_previous_raw_and_leaves_no_scratch(tmp_path, monkeypatch):
    def fetch(params, out_dir, downloads_dir):
        (out_dir / "half.txt").write_text("partial")
        raise StageError("the source is unreachable")

    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "source.json").write_text("{}")
    monkeypatch.setitem(download.SOURCES, "digits", replace(SOURCES["digits"], fetch=fetch))
    with pytest.raises(StageError, match="unreachable"):
        download.run(dl_params(), layout_of(tmp_path, raw=tmp_path / "raw"))
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "raw",
        "raw/source.json",
    ]


def test_main_reads_params_yaml_and_writes_the_contract_paths(tmp_path, monkeypatch):
    seen = []
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("download:\n  retries: 1\n")
    monkeypatch.setattr(download, "run", lambda params, layout: seen.append((params, layout)))
    download.main()
    assert seen == [(parse_params({"download": {"retries": 1}}).download, Layout())]


# --- through dvc repro ----------------------------------------------------------------


@pytest.mark.slow
def test_archive_source_through_dvc_repro(server, tmp_path):
    """The real pipeline in a copy of the project, fed by an archive on the local server."""
    from benchmarks.project import copy_project, set_params
    from tests.pipeline_runs import SMALL, run, stages_run

    members = {
        f"shapes/{name}/{i:02d}.png": png(k, i) for k, name in enumerate("abc") for i in range(20)
    }
    data = make_zip(members)
    server.behaviour.files["/shapes.zip"] = data
    download_params = {"source": "archive", "url": server.url("/shapes.zip"), "sha256": sha(data)}
    project = copy_project(tmp_path / "project", {**SMALL, "download": download_params})

    # Up to split: training on an archive's images is the same as on any other source's.
    output = run(["dvc", "repro", "split"], project)
    assert stages_run(output) == {"validate", "download", "prepare", "split"}
    info = json.loads((project / "data" / "prepared" / "info.json").read_text())
    assert info["classes"] == ["a", "b", "c"] and info["count"] == 60
    assert (project / "data" / "raw" / "shapes.zip").read_bytes() == data
    fetched = len(server.behaviour.requests)

    # A setting that does not change the data reruns download only, from the verified copy.
    set_params(project, {"download": {**download_params, "timeout": 30}})
    output = run(["dvc", "repro", "split"], project)
    assert stages_run(output) - {"validate"} == {"download"}
    assert len(server.behaviour.requests) == fetched


def test_readme_examples_are_valid_params():
    import re

    import yaml

    from tests.conftest import REPO_ROOT

    readme = (REPO_ROOT / "README.md").read_text()
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if "download:" in b]
    sources = {parse_params(yaml.safe_load(block)).download.source for block in blocks}
    assert sources == {"folder", "archive", "cifar10", "kaggle", "crawl", "table"}

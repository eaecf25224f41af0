"""The real pipeline in a fresh copy of the project: dvc repro, a no-op repro, reproducibility.

The copy holds the working tree's tracked and new files (what a clone of it would hold), in a
new git repository, with a small configuration so each run takes well under a minute.
Experiments, parameter changes and interrupted runs are in test_experiments_end_to_end.py, on
a copy of their own, so that the two files run side by side in two test workers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from benchmarks.project import set_params
from tests.pipeline_runs import lock_hash, repro_and_commit, run, stages_run
from tests.test_plots_page import EXTERNAL

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> tuple[Path, str]:
    return repro_and_commit(tmp_path_factory.mktemp("clone") / "project")


@pytest.fixture(scope="module")
def project(ran) -> Path:
    return ran[0]


def test_repro_runs_every_stage_and_writes_metrics(ran):
    project, output = ran
    assert stages_run(output) == {
        "validate",
        *("download", "prepare", "split", "augment", "train", "evaluate", "export", "audit"),
    }
    metrics = json.loads((project / "reports" / "metrics.json").read_text())
    assert 0 <= metrics["accuracy"] <= 1
    assert set(metrics["per_class"]) == {str(d) for d in range(10)}
    assert (project / "data" / "model" / "model.keras").exists()
    exported = json.loads((project / "reports" / "export.json").read_text())["exports"]
    assert set(exported) == {
        "saved_model",
        "onnx",
        "tflite_float32",
        "tflite_float16",
        "tflite_int8",
    }
    assert all((project / "data" / "export" / e["file"]).exists() for e in exported.values())
    assert (project / "logs" / "export-timing.json").exists()  # untracked: git ignores logs/
    audited = json.loads((project / "reports" / "audit.json").read_text())
    assert audited["audited"] == len(pd.read_csv(project / "data" / "prepared" / "manifest.csv"))
    issues = pd.read_csv(project / "reports" / "label_issues.csv")
    assert len(issues) == audited["flagged"]


def test_second_repro_runs_nothing(project):
    output = run(["dvc", "repro"], project)
    assert stages_run(output) == set()
    assert "Data and pipelines are up to date" in output


def test_a_params_mistake_no_stage_reads_stops_repro_before_any_stage(project):
    params = project / "params.yaml"
    original = params.read_text(encoding="utf-8")
    mistakes = (
        original + "trian:\n  lr: 0.1\n",
        original.replace("prepare:\n", "prepare:\n  sizee: 8\n"),
    )
    for mistaken in mistakes:
        params.write_text(mistaken, encoding="utf-8")
        output = run(["dvc", "repro"], project, expect=255)
        assert stages_run(output) == {"validate"}, output[-2000:]
        assert re.search(r"(trian|sizee): unknown key", output), output[-2000:]
    params.write_text(original, encoding="utf-8")
    # validate's output comes back byte for byte (or from DVC's run cache): nothing reruns
    assert stages_run(run(["dvc", "repro"], project)) <= {"validate"}
    assert "up to date" in run(["dvc", "status"], project)


def test_plots_page_references_nothing_outside_the_machine(project, tmp_path):
    run(["dvc", "plots", "show", "-o", str(tmp_path / "plots")], project)
    page = (tmp_path / "plots" / "index.html").read_text(encoding="utf-8")
    assert page.count("vegaEmbed(") >= 6  # every Vega chart, drawn by the inline scripts
    assert not EXTERNAL.search(page)
    assert not (project / "dvc_plots").exists()


def test_second_clean_run_with_one_worker_reproduces_exactly(project):
    # A forced rerun with one worker process must hash exactly as the two-worker run did.
    # On the same machine training is deterministic too, so metrics must match exactly.
    set_params(
        project,
        {"prepare": {"workers": 1}, "augment": {"workers": 1}, "check": {"metric_tolerance": 0}},
    )
    committed = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    output = run(["python", "-m", "imgpipe.repro_check"], project)
    assert re.search(r"(\d+) of \1 outputs and metrics reproduced", output), output[-2000:]
    # Every output, the trained model included, came out byte for byte as committed: only
    # the untracked settings changed (worker counts and the check's tolerance), and with them
    # the hash of params.yaml that validate records.
    changed = run(["git", "status", "--porcelain"], project)
    assert set(changed.split()) <= {"M", "params.yaml", "dvc.lock"}, changed
    rerun = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    for stage, entry in committed.items():
        assert rerun[stage]["outs"] == entry["outs"], stage
        moved = [dep["path"] for dep in rerun[stage]["deps"] if dep not in entry["deps"]]
        assert moved == (["params.yaml"] if stage == "validate" else []), (stage, moved)
    run(["git", "checkout", "--", "params.yaml", "dvc.lock"], project)


def test_repro_check_fails_and_names_a_changed_output(project):
    lock = project / "dvc.lock"
    original = lock.read_text()
    recorded = lock_hash(project, "split")
    lock.write_text(original.replace(recorded, "0" * 32 + ".dir"))
    # Only up to split: the check of a data stage needs no training.
    output = run(["python", "-m", "imgpipe.repro_check", "split"], project, expect=1)
    assert re.search(
        r"split\s+data/split\s+0{32}\.dir\s+" + re.escape(recorded) + r"\s+DIFFERS", output
    ), output[-2000:]
    lock.write_text(original)


def test_push_then_pull_in_another_clone_restores_everything(project, tmp_path):
    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "--local", "-d", "shared", str(remote)], project)
    run(["dvc", "push"], project)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    run(["dvc", "remote", "add", "--local", "-d", "shared", str(remote)], clone)
    run(["dvc", "pull"], clone)
    assert (clone / "data" / "model" / "model.keras").exists()
    output = run(["dvc", "repro"], clone)
    assert stages_run(output) == set()


def test_s3_remote_push_pull_with_credentials_kept_out_of_git(project, tmp_path, monkeypatch):
    """A real S3-compatible server (moto) on 127.0.0.1: push, pull in another clone, no-op
    repro. The project gets its keys from the environment, the clone from config.local; the
    committed .dvc/config holds neither."""
    pytest.importorskip("moto.server", reason="the dev extra installs moto[server]")
    pytest.importorskip("dvc_s3", reason="the dev extra installs dvc-s3")
    from tests.s3_server import ACCESS_KEY, SECRET_KEY, make_bucket, s3_server

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    with s3_server() as endpoint:
        bucket = make_bucket(endpoint, "imgpipe-store")
        url = "s3://imgpipe-store/cache"
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        run(["dvc", "remote", "add", "--local", "s3store", url], project)
        run(["dvc", "remote", "modify", "--local", "s3store", "endpointurl", endpoint], project)
        run(["dvc", "push", "-r", "s3store"], project)
        stored = bucket.list_objects_v2(Bucket="imgpipe-store")
        assert stored["KeyCount"] > 0

        clone = tmp_path / "s3-clone"
        run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
        # The team's remote is committed; where it is reached and the keys stay local.
        run(["dvc", "remote", "add", "s3store", url], clone)
        run(["dvc", "remote", "modify", "--local", "s3store", "endpointurl", endpoint], clone)
        run(["dvc", "remote", "modify", "--local", "s3store", "access_key_id", ACCESS_KEY], clone)
        secret = ["dvc", "remote", "modify", "--local", "s3store", "secret_access_key"]
        run([*secret, SECRET_KEY], clone)
        run(["dvc", "pull", "-r", "s3store"], clone)
    assert (clone / "data" / "model" / "model.keras").exists()
    assert stages_run(run(["dvc", "repro"], clone)) == set()
    for folder in (project, clone):
        committed = (folder / ".dvc" / "config").read_text()
        assert ACCESS_KEY not in committed and SECRET_KEY not in committed, folder
    assert SECRET_KEY in (clone / ".dvc" / "config.local").read_text()
    # config.local is git-ignored: only the committed remote's two lines show as changed.
    assert run(["git", "status", "--porcelain"], clone).split() == ["M", ".dvc/config"]

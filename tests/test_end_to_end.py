"""The real pipeline in a fresh copy of the project: dvc repro, no-op repro, experiments.

The copy holds the working tree's tracked and new files (what a clone of it would hold), in a
new git repository, with a small configuration so the whole run takes about a minute.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from benchmarks.project import copy_project, pipeline_env, set_params
from tests.test_plots_page import EXTERNAL

pytestmark = pytest.mark.slow

SMALL = {
    "prepare": {"size": [16, 16]},
    "augment": {"per_class": 140},  # a target per class: digits has about 125 to train on
    "train": {"epochs": 3, "batch_size": 64},
}


def _run(args: list[str], cwd: Path, expect: int = 0) -> str:
    result = subprocess.run(args, cwd=cwd, env=pipeline_env(), capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == expect, (
        f"{' '.join(args)} gave {result.returncode}:\n{output[-4000:]}"
    )
    return output


def _lock_hash(project: Path, stage: str) -> str:
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return lock["stages"][stage]["outs"][0]["md5"]


def _kill_when_scratch_appears(project: Path, scratch: str, target: str) -> None:
    """Start `dvc repro target`, SIGKILL its whole process group once ``scratch`` exists."""
    process = subprocess.Popen(
        ["dvc", "repro", target],
        cwd=project,
        env=pipeline_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not (project / scratch).exists():
        assert process.poll() is None, "the stage finished before it could be interrupted"
        assert time.monotonic() < deadline, "the stage never started writing"
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([\w-]+)'", output))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return copy_project(tmp_path_factory.mktemp("clone") / "project", SMALL)


def test_repro_runs_every_stage_and_writes_metrics(project):
    output = _run(["dvc", "repro"], project)
    assert _stages_run(output) == {"download", "prepare", "split", "augment", "train", "evaluate"}
    metrics = json.loads((project / "reports" / "metrics.json").read_text())
    assert 0 <= metrics["accuracy"] <= 1
    assert set(metrics["per_class"]) == {str(d) for d in range(10)}
    assert (project / "data" / "model" / "model.keras").exists()
    _run(["git", "add", "-A"], project)
    _run(["git", "commit", "-q", "-m", "run"], project)


def test_second_repro_runs_nothing(project):
    output = _run(["dvc", "repro"], project)
    assert _stages_run(output) == set()
    assert "Data and pipelines are up to date" in output


def test_plots_page_references_nothing_outside_the_machine(project, tmp_path):
    _run(["dvc", "plots", "show", "-o", str(tmp_path / "plots")], project)
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
    output = _run(["python", "-m", "imgpipe.repro_check"], project)
    assert re.search(r"(\d+) of \1 outputs and metrics reproduced", output), output[-2000:]
    _run(["git", "checkout", "--", "params.yaml", "dvc.lock"], project)


def test_repro_check_fails_and_names_a_changed_output(project):
    lock = project / "dvc.lock"
    original = lock.read_text()
    recorded = _lock_hash(project, "split")
    lock.write_text(original.replace(recorded, "0" * 32 + ".dir"))
    output = _run(["python", "-m", "imgpipe.repro_check"], project, expect=1)
    assert re.search(
        r"split\s+data/split\s+0{32}\.dir\s+" + re.escape(recorded) + r"\s+DIFFERS", output
    ), output[-2000:]
    lock.write_text(original)


def test_push_then_pull_in_another_clone_restores_everything(project, tmp_path):
    remote = tmp_path / "remote"
    _run(["dvc", "remote", "add", "--local", "-d", "shared", str(remote)], project)
    _run(["dvc", "push"], project)
    clone = tmp_path / "clone"
    _run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    _run(["dvc", "remote", "add", "--local", "-d", "shared", str(remote)], clone)
    _run(["dvc", "pull"], clone)
    assert (clone / "data" / "model" / "model.keras").exists()
    output = _run(["dvc", "repro"], clone)
    assert _stages_run(output) == set()


def test_experiment_with_new_lr_reruns_only_train_and_evaluate(project):
    output = _run(["dvc", "exp", "run", "-S", "train.lr=0.0001"], project)
    assert _stages_run(output) == {"train", "evaluate"}
    # The same value in the form YAML reads as a string must work too.
    _run(["dvc", "exp", "run", "-S", "train.lr=1e-4"], project)
    listing = _run(["dvc", "exp", "show", "--json"], project)
    shown = json.loads(listing[listing.index("[") :])  # skip any warning printed before it
    experiments = [exp for rev in shown for exp in (rev.get("experiments") or [])]
    assert experiments, "dvc exp show lists no experiment"
    data = experiments[0]["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["train"]["lr"] in (0.0001, "0.0001")
    assert "accuracy" in data["metrics"]["reports/metrics.json"]["data"]


def test_queued_sweep_runs_with_two_workers_and_lists_every_run(project):
    _run(["dvc", "exp", "run", "--queue", "-S", "train.lr=0.003,0.0003"], project)
    _run(["dvc", "queue", "start", "-j", "2"], project)
    deadline = time.monotonic() + 600
    while True:
        status = _run(["dvc", "queue", "status"], project)
        if not re.search(r"\b(Queued|Running)\b", status):
            break
        assert time.monotonic() < deadline, status
        time.sleep(3)
    assert status.count("Success") == 2, status
    listing = _run(["dvc", "exp", "show", "--json"], project)
    shown = json.loads(listing[listing.index("[") :])
    lrs = {
        exp["revs"][0]["data"]["params"]["params.yaml"]["data"]["train"]["lr"]
        for rev in shown
        for exp in (rev.get("experiments") or [])
    }
    assert {0.003, 0.0003} <= {float(lr) for lr in lrs}


def test_changing_an_augment_param_reruns_augment_and_downstream_only(project):
    set_params(project, {"augment": {"per_class": 150}})
    output = _run(["dvc", "repro"], project)
    assert _stages_run(output) == {"augment", "train", "evaluate"}


def test_killed_prepare_or_augment_completes_on_the_next_repro(project):
    # Larger outputs, so each stage runs long enough to be killed half-way; the data stages
    # are the target, training is not needed to judge them.
    set_params(
        project, {"prepare": {"size": [96, 96], "color": "rgb"}, "augment": {"per_class": 300}}
    )
    _kill_when_scratch_appears(project, "data/.prepared.partial", "augment")
    assert "prepare" in _stages_run(_run(["dvc", "repro", "augment"], project))
    interrupted_prepare = _lock_hash(project, "prepare")
    set_params(project, {"augment": {"per_class": 310}})
    _kill_when_scratch_appears(project, "data/.augmented.partial", "augment")
    assert _stages_run(_run(["dvc", "repro", "augment"], project)) == {"augment"}
    interrupted_augment = _lock_hash(project, "augment")
    assert not list((project / "data").glob(".*.partial"))
    # An uninterrupted forced run gives exactly the same outputs.
    _run(["dvc", "repro", "--force", "augment"], project)
    assert _lock_hash(project, "prepare") == interrupted_prepare
    assert _lock_hash(project, "augment") == interrupted_augment
    assert "up to date" in _run(["dvc", "status", "augment"], project)

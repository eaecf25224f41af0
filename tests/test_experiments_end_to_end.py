"""Experiments, parameter changes and interrupted runs of the real pipeline, in a copy of the
project that `dvc repro` has run and committed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.project import set_params
from tests.pipeline_runs import (
    kill_when_scratch_appears,
    lock_hash,
    repro_and_commit,
    run,
    stages_run,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return repro_and_commit(tmp_path_factory.mktemp("experiments") / "project")[0]


def test_experiment_with_new_lr_reruns_only_the_model_stages(project):
    output = run(["dvc", "exp", "run", "-S", "train.lr=0.0001"], project)
    # validate checks every edit of params.yaml, and writes what it always writes
    assert stages_run(output) == {"validate", "train", "evaluate", "export"}
    listing = run(["dvc", "exp", "show", "--json"], project)
    shown = json.loads(listing[listing.index("[") :])  # skip any warning printed before it
    experiments = [exp for rev in shown for exp in (rev.get("experiments") or [])]
    assert experiments, "dvc exp show lists no experiment"
    data = experiments[0]["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["train"]["lr"] == 0.0001
    assert "accuracy" in data["metrics"]["reports/metrics.json"]["data"]


def test_changing_an_augment_param_reruns_augment_and_downstream_only(project):
    set_params(project, {"augment": {"per_class": 150}})
    output = run(["dvc", "repro"], project)
    assert stages_run(output) == {"validate", "augment", "train", "evaluate", "export"}


def test_killed_prepare_or_augment_completes_on_the_next_repro(project):
    # Larger outputs, so each stage runs long enough to be killed half-way; the data stages
    # are the target, training is not needed to judge them.
    set_params(
        project, {"prepare": {"size": [96, 96], "color": "rgb"}, "augment": {"per_class": 300}}
    )
    kill_when_scratch_appears(project, "data/.prepared.partial", "augment")
    assert "prepare" in stages_run(run(["dvc", "repro", "augment"], project))
    interrupted_prepare = lock_hash(project, "prepare")
    set_params(project, {"augment": {"per_class": 310}})
    kill_when_scratch_appears(project, "data/.augmented.partial", "augment")
    # (validate reruns on the edit, or DVC's run cache restores what it wrote)
    assert stages_run(run(["dvc", "repro", "augment"], project)) - {"validate"} == {"augment"}
    interrupted_augment = lock_hash(project, "augment")
    assert not list((project / "data").glob(".*.partial"))
    # An uninterrupted forced run gives exactly the same outputs.
    run(["dvc", "repro", "--force", "augment"], project)
    assert lock_hash(project, "prepare") == interrupted_prepare
    assert lock_hash(project, "augment") == interrupted_augment
    assert "up to date" in run(["dvc", "status", "augment"], project)

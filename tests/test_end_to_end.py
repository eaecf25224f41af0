"""The real pipeline in a fresh copy of the project: dvc repro, no-op repro, experiments.

The copy holds the working tree's tracked and new files (what a clone of it would hold), in a
new git repository, with a small configuration so the whole run takes about a minute.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

SMALL = {
    "prepare": {"size": [16, 16]},
    "augment": {"per_class": 10},
    "train": {"epochs": 3, "batch_size": 64},
}


def _project_files() -> list[str]:
    listing = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [name for name in listing.split("\0") if name and (REPO_ROOT / name).is_file()]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(
        GIT_AUTHOR_NAME="test",
        GIT_AUTHOR_EMAIL="test@localhost",
        GIT_COMMITTER_NAME="test",
        GIT_COMMITTER_EMAIL="test@localhost",
        TF_CPP_MIN_LOG_LEVEL="2",
        DVC_NO_ANALYTICS="1",
    )
    return env


def _run(args: list[str], cwd: Path) -> str:
    result = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{output[-4000:]}"
    return output


def _stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([\w-]+)'", output))


def _merge(base: dict, overrides: dict) -> dict:
    for key, value in overrides.items():
        base[key] = _merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return base


def _set_params(project: Path, overrides: dict) -> None:
    path = project / "params.yaml"
    path.write_text(
        yaml.safe_dump(_merge(yaml.safe_load(path.read_text()), overrides), sort_keys=False)
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clone") / "project"
    for name in _project_files():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, target)
    _set_params(root, SMALL)
    _run(["git", "init", "-q", "-b", "main"], root)
    _run(["git", "add", "-A"], root)
    _run(["git", "commit", "-q", "-m", "copy"], root)
    return root


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


def test_experiment_with_new_lr_reruns_only_train_and_evaluate(project):
    output = _run(["dvc", "exp", "run", "-S", "train.lr=0.0001"], project)
    assert _stages_run(output) == {"train", "evaluate"}
    listing = _run(["dvc", "exp", "show", "--json"], project)
    shown = json.loads(listing[listing.index("[") :])  # skip any warning printed before it
    experiments = [exp for rev in shown for exp in (rev.get("experiments") or [])]
    assert experiments, "dvc exp show lists no experiment"
    data = experiments[0]["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["train"]["lr"] in (0.0001, "0.0001")
    assert "accuracy" in data["metrics"]["reports/metrics.json"]["data"]


def test_changing_an_augment_param_reruns_augment_and_downstream_only(project):
    _set_params(project, {"augment": {"per_class": 12}})
    output = _run(["dvc", "repro"], project)
    assert _stages_run(output) == {"augment", "train", "evaluate"}

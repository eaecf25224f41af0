"""Running the real pipeline in a throw-away copy of the project, for the end-to-end tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import yaml

from benchmarks.project import copy_project, pipeline_env

SMALL = {
    "prepare": {"size": [16, 16]},
    "augment": {"per_class": 140},  # a target per class: digits has about 125 to train on
    "train": {"epochs": 3, "batch_size": 64},
    "audit": {"folds": 2, "epochs": 1},
}


def run(args: list[str], cwd: Path, expect: int = 0) -> str:
    result = subprocess.run(args, cwd=cwd, env=pipeline_env(), capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == expect, (
        f"{' '.join(args)} gave {result.returncode}:\n{output[-4000:]}"
    )
    return output


def lock_hash(project: Path, stage: str) -> str:
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return lock["stages"][stage]["outs"][0]["md5"]


def kill_when_scratch_appears(project: Path, scratch: str, target: str) -> None:
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


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([\w-]+)'", output))


def repro_and_commit(target: Path) -> tuple[Path, str]:
    """A copy of the project at ``target`` with SMALL params, run by `dvc repro` and committed."""
    project = copy_project(target, SMALL)
    output = run(["dvc", "repro"], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-q", "-m", "run"], project)
    return project, output

"""A throw-away copy of this project in its own git repository, for runs of the real pipeline.

The copy holds the working tree's tracked and new files (what a clone of it would hold), so
the end-to-end tests and the scaling benchmark run the code as it is now, not as last
committed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent


def project_files(root: Path = REPO_ROOT) -> list[str]:
    listing = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [name for name in listing.split("\0") if name and (root / name).is_file()]


def pipeline_env() -> dict[str, str]:
    """This interpreter's tools first on PATH, quiet TensorFlow, an identity for git commits."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(
        GIT_AUTHOR_NAME="pipeline",
        GIT_AUTHOR_EMAIL="pipeline@localhost",
        GIT_COMMITTER_NAME="pipeline",
        GIT_COMMITTER_EMAIL="pipeline@localhost",
        TF_CPP_MIN_LOG_LEVEL="2",
        DVC_NO_ANALYTICS="1",
    )
    return env


def merge_params(base: dict, overrides: dict) -> dict:
    for key, value in overrides.items():
        base[key] = merge_params(base.get(key) or {}, value) if isinstance(value, dict) else value
    return base


def set_params(project: Path, overrides: dict) -> None:
    path = project / "params.yaml"
    params = merge_params(yaml.safe_load(path.read_text()), overrides)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def copy_project(target: Path, params: dict | None = None) -> Path:
    """Copy the project to ``target``, apply ``params`` overrides, commit it as one revision."""
    for name in project_files():
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, destination)
    if params:
        set_params(target, params)
    for args in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "add", "-A"],
        ["git", "commit", "-q", "-m", "copy"],
    ):
        subprocess.run(args, cwd=target, env=pipeline_env(), check=True, capture_output=True)
    return target

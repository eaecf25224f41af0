"""Queued experiments over the data stages, two at a time, with every kind of local path.

`dvc queue` runs each experiment in a copy of the project under .dvc/tmp/exps/ holding only
what git tracks, so a relative ``download.path`` (a git-ignored folder inside the project, a
folder or archive beside it) must still mean what it means in the project itself, and two
experiments downloading at once must not meet. Only up to `split` is run: training is not
what is judged here.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

import pytest

from benchmarks.project import copy_project
from tests.archive_makers import make_zip
from tests.conftest import class_image
from tests.local_server import LocalServer
from tests.pipeline_runs import run

pytestmark = pytest.mark.slow

CLASSES = ["circle", "square", "triangle"]
PER_CLASS = 12


def _photos(folder: Path) -> dict[str, bytes]:
    """Class folders of tiny PNGs at ``folder``; the same images as zip members."""
    members = {}
    for index, name in enumerate(CLASSES):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for sample in range(PER_CLASS):
            path = folder / name / f"{sample:02d}.png"
            class_image(index, sample, (16, 16)).save(path)
            members[f"pets/{name}/{sample:02d}.png"] = path.read_bytes()
    return members


def _wait_for_queue(project: Path) -> str:
    deadline = time.monotonic() + 600
    while True:
        status = run(["dvc", "queue", "status"], project)
        if not re.search(r"\b(Queued|Running)\b", status):
            return status
        assert time.monotonic() < deadline, status
        time.sleep(3)


def _experiments(project: Path) -> list[dict]:
    listing = run(["dvc", "exp", "show", "--json"], project)
    shown = json.loads(listing[listing.index("[") :])
    return [exp["revs"][0]["data"] for rev in shown for exp in (rev.get("experiments") or [])]


def test_queued_data_experiments_find_relative_folders_and_archives(tmp_path):
    members = _photos(tmp_path / "photos")  # beside the project: ../photos
    archive = make_zip(members)
    sha = hashlib.sha256(archive).hexdigest()
    base = {
        "download": {"source": "folder", "path": "../photos"},
        "prepare": {"size": [8, 8], "workers": 1},
        "augment": {"workers": 1},
    }
    project = copy_project(tmp_path / "project", base)
    _photos(project / "photos")  # inside the project, ignored by git: not in the copy
    with open(project / ".git" / "info" / "exclude", "a") as exclude:
        exclude.write("photos/\n")

    with LocalServer() as server:
        server.behaviour.files["/pets.zip"] = archive
        archive_url = server.url("/pets.zip")
        # A folder beside the project (the baseline), one inside it that git ignores, an
        # archive downloaded by each experiment into its own copy. An archive by path is
        # found as a folder is (imgpipe.layout.local_path).
        sweeps = [
            ["-S", "prepare.size=[10,10]"],
            ["-S", "download.path=photos", "-S", "prepare.size=[10,10]"],
            [
                *("-S", "download.source=archive", "-S", f"+download.sha256={sha}"),
                *("-S", "download.path=null", "-S", f"+download.url={archive_url}"),
            ],
        ]
        for sweep in sweeps:
            run(["dvc", "exp", "run", "--queue", "split", *sweep], project)
        run(["dvc", "queue", "start", "-j", "2"], project)
        status = _wait_for_queue(project)
    assert status.count("Success") == len(sweeps), status

    experiments = {}
    for data in _experiments(project):
        download = data["params"]["params.yaml"]["data"]["download"]
        experiments[download["source"], download.get("path")] = data["outs"]
    assert set(experiments) == {("folder", "../photos"), ("folder", "photos"), ("archive", None)}
    # The same images found through either relative path: the same prepared shards.
    prepared = {key: outs["data/prepared"]["hash"] for key, outs in experiments.items()}
    assert prepared["folder", "../photos"] == prepared["folder", "photos"], experiments
    assert all(prepared.values())
    # The URL was fetched into the experiment's own copy, never the project's downloads.
    assert not (project / ".downloads").exists()

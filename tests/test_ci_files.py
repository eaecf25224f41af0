"""The CI entry points run what the README promises."""

import re

import yaml

from tests.conftest import REPO_ROOT


def test_github_workflow_runs_the_tests_and_the_reproducibility_check():
    workflow = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "pipeline.yml").read_text())
    steps = workflow["jobs"]["test-and-repro-check"]["steps"]
    commands = [step.get("run", "") for step in steps]
    assert commands.index("make test") < commands.index("make repro-check")


def test_ci_script_runs_the_readme_test_command():
    readme = (REPO_ROOT / "README.md").read_text()
    assert re.search(r"^make test\b", readme, re.M)
    script = (REPO_ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", script, re.M)


def test_makefile_targets_exist_for_each_documented_command():
    makefile = (REPO_ROOT / "Makefile").read_text()
    for target in ("setup", "repro", "repro-check", "test", "lint", "bench"):
        assert re.search(rf"^{re.escape(target)}:", makefile, re.M), target


def test_ci_tests_the_oldest_and_newest_supported_python():
    import sys

    sys.path.insert(0, str(REPO_ROOT / "tools"))
    import check_python

    lowest, beyond = check_python.supported_range()
    workflow = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "pipeline.yml").read_text())
    tested = workflow["jobs"]["test-and-repro-check"]["strategy"]["matrix"]["python-version"]
    assert tested == [f"3.{lowest[1]}", f"3.{beyond[1] - 1}"]

import json
import subprocess

import pytest
import yaml

from imgpipe import repro_check
from imgpipe.errors import StageError
from imgpipe.params import CheckParams

DVC_YAML = {
    "stages": {
        "prepare": {"cmd": "x", "outs": ["data/prepared"]},
        "train": {"cmd": "y", "metrics": [{"reports/train.json": {"cache": False}}]},
    }
}


def _lock(md5: str) -> dict:
    return {"stages": {"prepare": {"outs": [{"path": "data/prepared", "md5": md5}]}}}


def _project(tmp_path, recorded_md5: str, metrics: dict):
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML))
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(_lock(recorded_md5)))
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "train.json").write_text(json.dumps(metrics))
    return tmp_path


PARAMS = CheckParams(exact_stages=["prepare"], metric_tolerance=0.01)


def test_identical_outputs_and_close_metrics_pass(tmp_path):
    project = _project(tmp_path, "abc.dir", {"accuracy": 0.95, "train_seconds": 3.0})
    findings = repro_check.run(PARAMS, project, reproduce=False)
    assert [(f.item, f.ok) for f in findings] == [
        ("data/prepared", True),
        ("reports/train.json:accuracy", True),
    ]


def test_a_named_stage_checks_it_and_those_before_it_only(tmp_path):
    project = _project(tmp_path, "abc.dir", {"accuracy": 0.95})
    findings = repro_check.run(PARAMS, project, reproduce=False, target="prepare")
    assert [f.item for f in findings] == ["data/prepared"]
    with pytest.raises(
        StageError, match=r"no stage named 'evaluate' in dvc.yaml; stages: prepare, train"
    ):
        repro_check.run(PARAMS, project, reproduce=False, target="evaluate")


def test_changed_hash_and_drifted_metric_are_reported():
    findings = repro_check.compare_hashes("prepare", {"data/prepared": "a"}, {"data/prepared": "b"})
    assert not findings[0].ok
    drift = repro_check.compare_metrics(
        "train",
        {"m.json": {"accuracy": 0.95, "eval.loss": 0.1}},
        {"m.json": {"accuracy": 0.90, "eval.loss": 0.105}},
        tolerance=0.01,
    )
    assert [(f.item, f.ok) for f in drift] == [
        ("m.json:accuracy", False),
        ("m.json:eval.loss", True),
    ]
    table = repro_check.format_findings(findings + drift, only_differences=True)
    assert "DIFFERS" in table and "eval.loss" not in table


def test_missing_metric_is_a_difference():
    findings = repro_check.compare_metrics("evaluate", {"m.json": {"accuracy": 1.0}}, {}, 0.1)
    assert findings[0].got == "missing" and not findings[0].ok


def test_timings_are_never_compared(tmp_path):
    (tmp_path / "m.json").write_text(
        json.dumps({"train_seconds": 1, "a": {"images_per_second": 2, "f1": 0.5}, "name": "x"})
    )
    assert repro_check.read_metrics(tmp_path, ["m.json"]) == {"m.json": {"a.f1": 0.5}}


def test_expected_failures_end_in_a_message_and_status_2(tmp_path, caplog):
    # No dvc.yaml where the check is pointed: a message naming the file and the fix.
    (tmp_path / "params.yaml").write_text("{}\n")
    with pytest.raises(SystemExit) as exit_info:
        repro_check.main(["--project", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "dvc.yaml is missing: run repro-check in the project's top folder" in caplog.text
    # A lock without the data stages' runs: say to run and commit them first.
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML))
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump({"stages": {}}))
    with pytest.raises(StageError, match=r"records no run of prepare: run `dvc repro`"):
        repro_check.run(PARAMS, tmp_path, reproduce=False)


def test_a_failing_rerun_is_a_message_not_a_traceback(tmp_path, monkeypatch):
    project = _project(tmp_path, "abc.dir", {"accuracy": 0.95})
    monkeypatch.setattr(
        repro_check.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 3)
    )
    with pytest.raises(StageError, match=r"`dvc repro --force` failed with exit status 3"):
        repro_check.run(PARAMS, project)


def test_uncommitted_params_are_named_before_the_rerun(tmp_path, caplog):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "params.yaml").write_text("train: {lr: 0.001}\n")
    git("add", "params.yaml")
    git("-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "-qm", "p")
    repro_check.warn_if_params_uncommitted(tmp_path)
    assert "differs from the last commit" not in caplog.text
    (tmp_path / "params.yaml").write_text("train: {lr: 0.01}\n")
    repro_check.warn_if_params_uncommitted(tmp_path)
    assert "params.yaml differs from the last commit: the rerun uses the workspace's" in caplog.text

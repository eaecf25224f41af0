import json

import yaml

from imgpipe import repro_check
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

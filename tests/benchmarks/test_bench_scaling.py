"""Smoke test: the scaling benchmark runs the real pipeline at two tiny sizes."""

import pytest

from benchmarks import bench_scaling
from benchmarks.harness import Growth, format_growth_table

pytestmark = pytest.mark.slow


def test_scaling_benchmark_reports_every_stage(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_scaling, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(bench_scaling, "SIZES", (40, 80))
    # The data stages only: training is measured the same way and would add a minute.
    monkeypatch.setattr(bench_scaling, "STAGES", ("download", "prepare", "split", "augment"))
    rows = bench_scaling.run(scale=1.0, repeats=1)
    assert all(isinstance(row, Growth) for row in rows)
    assert [r.stage for r in rows if r.unit == "MiB"] == ["download", "prepare", "split", "augment"]
    assert {(r.small_size, r.large_size) for r in rows} == {(40, 80)}
    assert all(r.small > 0 and r.large > 0 for r in rows)
    assert "no-op dvc repro" in format_growth_table(rows)
    assert sorted((tmp_path / "cache").iterdir()) == [
        tmp_path / "cache" / "photos-40.tar",
        tmp_path / "cache" / "photos-80.tar",
    ]

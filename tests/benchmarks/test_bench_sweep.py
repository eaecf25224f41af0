"""The sweep benchmark's wiring, with DVC stood in for: a real sweep takes minutes."""

from pathlib import Path

from benchmarks import bench_sweep


def test_sweep_queues_every_size_starts_the_workers_and_reports_both_wall_times(monkeypatch):
    calls = []
    statuses = iter(["Running", "Queued Running"])

    def dvc(args, project):
        calls.append((Path(project).name, args))
        if args == ["queue", "status"]:
            return next(statuses, "Success " * len(bench_sweep.SIZES))
        return ""

    monkeypatch.setattr(bench_sweep, "_dvc", dvc)
    monkeypatch.setattr(bench_sweep, "POLL_SECONDS", 0)
    monkeypatch.setattr(bench_sweep, "baseline", lambda work, epochs: _empty(work / "baseline"))
    (row,) = bench_sweep.run(scale=0.1)
    assert row.stage == "sweep" and row.unit == "s" and not row.higher_is_better
    assert row.ours >= 0 and row.plain >= 0 and set(row.samples) == {"-j 1", "-j 2"}
    for jobs in (1, 2):
        mine = [args for name, args in calls if name == f"sweep-j{jobs}"]
        queued = [args[-1] for args in mine if args[:3] == ["exp", "run", "--queue"]]
        assert queued == [f"prepare.size=[{w},{h}]" for w, h in bench_sweep.SIZES]
        assert ["queue", "start", "-j", str(jobs)] in mine and ["queue", "stop"] in mine


def _empty(folder: Path) -> Path:
    folder.mkdir(parents=True)
    return folder

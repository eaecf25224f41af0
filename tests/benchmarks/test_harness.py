from PIL import Image

from benchmarks.__main__ import available
from benchmarks.corpus import make_corpus
from benchmarks.harness import Comparison, format_table, median_rates


def test_corpus_is_seeded_jpegs_of_photo_sizes(tmp_path):
    make_corpus(tmp_path / "one", 6, seed=3)
    make_corpus(tmp_path / "two", 6, seed=3)
    files = sorted((tmp_path / "one").rglob("*.jpg"))
    assert [p.parent.name for p in files] == ["a", "a", "a", "b", "b", "b"]
    for path in files:
        with Image.open(path) as image:
            assert image.format == "JPEG"
            assert min(image.size) >= 240 and max(image.size) <= 500
        assert (
            path.read_bytes()
            == (tmp_path / "two" / path.relative_to(tmp_path / "one")).read_bytes()
        )


def test_ratio_and_goal_follow_the_direction_of_better():
    faster = Comparison("s", "throughput", "img/s", ours=300, plain=100, plain_name="loop", goal=2)
    assert faster.ratio == 3 and faster.meets_goal
    memory = Comparison(
        "s",
        "peak memory",
        "MiB",
        ours=200,
        plain=100,
        plain_name="small",
        higher_is_better=False,
        goal=0.9,
    )
    assert memory.ratio == 0.5 and memory.meets_goal is False
    table = format_table([faster, memory])
    assert "3.00x" in table and "MISSED" in table


def test_median_rates_alternates_contenders():
    calls = []
    rates = median_rates({"x": lambda: calls.append("x"), "y": lambda: calls.append("y")}, 1, 2)
    assert calls == ["x", "y", "x", "y"]
    assert len(rates["x"]) == 2


def test_benchmark_modules_are_discovered():
    assert all(name.isidentifier() for name in available())


def test_measure_command_sees_memory_of_child_processes(tmp_path):
    import sys

    from benchmarks.harness import measure_command

    # The parent stays small; a child it starts holds about 200 MiB.
    child = "import numpy as np, time; a = np.ones(25_000_000); time.sleep(0.5)"
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])"
    cost = measure_command([sys.executable, "-c", parent], tmp_path)
    assert cost.peak_rss_mib > 180
    assert cost.seconds >= 0.5


def test_rows_survive_the_trip_between_processes():
    from benchmarks.harness import Growth, row_from_dict, row_to_dict

    rows = [
        Comparison("s", "w", "img/s", 3.0, 1.0, "loop", goal=2, samples={"ours": [3.0]}),
        Growth("s", "noop", "s", 0.5, 0.6, 100, 1000, goal=1.5),
    ]
    assert [row_from_dict(row_to_dict(row)) for row in rows] == rows


def test_each_benchmark_runs_in_its_own_interpreter(monkeypatch):
    import json
    import subprocess
    from pathlib import Path

    from benchmarks import __main__ as runner

    calls = []

    def fake_run(args, check):
        calls.append(args)
        Path(args[args.index("--rows-to") + 1]).write_text(
            json.dumps(
                [
                    {
                        "kind": "Comparison",
                        "stage": "x",
                        "what": "w",
                        "unit": "u",
                        "ours": 2.0,
                        "plain": 1.0,
                        "plain_name": "p",
                    }
                ]
            )
        )

    monkeypatch.setattr(subprocess, "run", fake_run)
    rows = runner.run_isolated("augment", 0.5, 2)
    assert rows[0].ratio == 2.0
    assert calls[0][1:5] == ["-m", "benchmarks", "augment", "--scale"]

"""The training benchmark runs end to end at a tiny scale and reports its four rows."""

from benchmarks import bench_train


def test_train_benchmark_reports_throughput_and_memory_rows():
    rows = bench_train.run(scale=0.02, repeats=1)
    assert [row.stage for row in rows] == ["train"] * 4
    throughput, pillow, pillow_png, memory = rows
    assert throughput.goal == 0.9 and pillow.goal == 3 and pillow_png.goal is None
    for row in (throughput, pillow, pillow_png):
        assert row.unit == "img/s" and row.ours > 0 and row.plain > 0
    assert memory.unit == "MiB" and not memory.higher_is_better
    # Both runs load TensorFlow, so each peak is at least a few hundred MiB.
    assert min(memory.samples["x1"] + memory.samples["x10"]) > 100

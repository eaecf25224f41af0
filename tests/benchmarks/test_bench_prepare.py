from benchmarks import bench_prepare


def test_prepare_benchmark_measures_every_row_at_a_tiny_scale():
    rows = bench_prepare.run(scale=0.004, repeats=1)
    throughput = [row for row in rows if row.unit == "img/s"]
    assert len(throughput) == 2 * len(bench_prepare.CONFIGS)
    assert {row.plain_name for row in throughput} == {
        bench_prepare.PLAIN_NAME,
        bench_prepare.DECODE_NAME + " (goal: within 2x)",
    }
    for row in throughput:
        assert row.ours > 0 and row.plain > 0 and row.goal is not None
        assert "12 JPEGs" in row.what
    cpu = [row for row in rows if row.unit == "ms/img"]
    assert len(cpu) == len(bench_prepare.CONFIGS)
    assert all(row.ours > 0 and row.plain > 0 and not row.higher_is_better for row in cpu)
    memory = rows[-1]
    assert memory.unit == "MiB" and not memory.higher_is_better
    assert memory.ours > 10 and memory.plain > 10

from benchmarks import bench_prepare


def test_prepare_benchmark_measures_every_row_at_a_tiny_scale():
    rows = bench_prepare.run(scale=0.004, repeats=1)
    throughput = [row for row in rows if row.unit == "img/s"]
    assert len(throughput) == 3 * len(bench_prepare.CONFIGS)
    assert {row.plain_name for row in throughput} == {
        bench_prepare.PLAIN_NAME,
        bench_prepare.FLOOR_NAME + " (goal: within 1.25x)",
    }
    for row in throughput:
        assert row.ours > 0 and row.plain > 0
        assert "12 JPEGs" in row.what or "floor itself" in row.what
    assert sum(row.goal is not None for row in throughput) == 2 * len(bench_prepare.CONFIGS)
    cpu = [row for row in rows if row.unit == "ms/img"]
    assert len(cpu) == 2 * len(bench_prepare.CONFIGS)
    assert all(row.ours > 0 and row.plain > 0 and not row.higher_is_better for row in cpu)
    memory = rows[-2]
    assert memory.unit == "MiB" and not memory.higher_is_better
    assert memory.ours > 10 and memory.plain > 10
    # The rerun after adding 1% new images (checked byte for byte inside) against a clean one.
    incremental = rows[-1]
    assert incremental.unit == "s" and "adding 1 to 100 images" in incremental.what
    assert 0 < incremental.ours < incremental.plain

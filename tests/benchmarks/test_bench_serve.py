"""The serving benchmark runs the real server for both formats at a tiny scale."""

from benchmarks import bench_serve


def test_serve_benchmark_reports_throughput_latency_and_memory_rows():
    rows = bench_serve.run(scale=0.02, repeats=1)  # a second of load per server
    throughput, p50, p99, *memory = rows
    assert throughput.unit == "req/s" and throughput.ours > 0 and throughput.plain > 0
    assert p50.unit == p99.unit == "ms" and not p99.higher_is_better
    assert 0 < p50.ours <= p99.ours and 0 < p50.plain <= p99.plain
    assert [row.what for row in memory] == [
        "server RSS (onnx), warm vs end",
        "server RSS (keras), warm vs end",
    ]
    assert all(row.small > 50 and row.large_size > row.small_size for row in memory)

from benchmarks import bench_download


def test_download_benchmark_rows_at_tiny_scale():
    rows = bench_download.run(scale=0.02, repeats=1)
    assert [row.stage for row in rows] == ["prepare (raw reader)", "download (folder)"]
    for row in rows:
        assert row.ours > 0 and row.plain > 0
        assert row.unit == "img/s"
        assert len(row.samples["ours"]) == 1

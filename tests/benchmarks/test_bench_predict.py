from benchmarks import bench_predict


def test_predict_benchmark_reports_both_rows_at_a_tiny_scale():
    rows = bench_predict.run(scale=0.02, repeats=1)
    assert [row.stage for row in rows] == ["predict", "predict"]
    for row in rows:
        assert row.unit == "img/s"
        assert row.ours > 0 and row.plain > 0
        assert len(row.samples["ours"]) == 1

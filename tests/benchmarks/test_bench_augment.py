from benchmarks import bench_augment


def test_augment_benchmark_runs_at_a_tiny_scale():
    rows = bench_augment.run(scale=0.03, repeats=1)
    throughput, cpu, reproduced = rows
    assert throughput.unit == "img/s" and throughput.goal == 2
    assert throughput.ours > 0 and throughput.plain > 0
    assert len(throughput.samples["ours"]) == len(throughput.samples["augmentor"]) == 1
    assert cpu.higher_is_better is False and cpu.ours > 0 and cpu.plain > 0
    assert reproduced.unit == "%" and reproduced.ours == 100
    assert 0 <= reproduced.plain <= 100


def test_reproduced_percent_counts_identical_images_as_a_multiset():
    first = [b"a", b"a", b"b", b"c"]
    assert bench_augment.reproduced_percent(first, [b"c", b"b", b"a", b"a"]) == 100
    assert bench_augment.reproduced_percent(first, [b"a", b"a", b"a", b"d"]) == 50
    assert bench_augment.reproduced_percent(first, []) == 0

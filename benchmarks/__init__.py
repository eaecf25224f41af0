"""Benchmarks: each stage against the plain approach a user would otherwise write.

Run them all with ``python -m benchmarks`` (or ``make bench``). They are not part of the test
suite's pass/fail; each has a smoke test in ``tests/benchmarks`` so it cannot rot.
"""

import itertools

import pytest

from imgpipe.parallel import ordered_map


def square(x: int) -> int:
    return x * x


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("count", [0, 1, 7, 100])
def test_results_come_back_in_input_order(workers, count):
    results = list(ordered_map(square, range(count), workers, window=16, chunk=3))
    assert results == [x * x for x in range(count)]


def test_inputs_are_pulled_a_window_at_a_time_not_all_at_once():
    pulled = []

    def inputs():
        for x in itertools.count():
            pulled.append(x)
            yield x

    results = ordered_map(square, inputs(), workers=2, window=10, chunk=4)
    first = [next(results) for _ in range(5)]
    assert first == [0, 1, 4, 9, 16]
    # The window being collected and the one submitted ahead of it, nothing more.
    assert len(pulled) <= 2 * 10

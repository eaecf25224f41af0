"""ordered_map: input order for any worker count, bounded reading ahead, and worker faults."""

import itertools
import multiprocessing
import os
import signal
import time

import pytest

from imgpipe.parallel import Fault, ordered_map


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


# --- worker faults ----------------------------------------------------------------------------

fork_only = pytest.mark.skipif(
    multiprocessing.get_start_method() != "fork",
    reason="the stand-ins reach worker processes by being inherited through fork",
)

# Marks in a file's bytes that make the stand-in decoder below misbehave as hostile files do.
CRASH_MARK = b"#kill-the-decoder#"
HANG_MARK = b"#hang-the-decoder#"


def misbehaving(original):
    """A decoder stand-in that kills its process or hangs on marked data, else decodes."""

    def decode(data, *args, **kwargs):
        if CRASH_MARK in data:
            os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer does
        if HANG_MARK in data:
            time.sleep(120)  # a looping decoder
        return original(data, *args, **kwargs)

    return decode


def hostile(x: int) -> int:
    if x == 13:
        os.kill(os.getpid(), signal.SIGSEGV)
    if x == 21:
        time.sleep(120)
    if x == 34:
        os._exit(3)
    return x * x


def noted(x: int, fault: Fault) -> tuple[int, str]:
    return (x, fault.kind)


@fork_only
@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("chunk", [1, 4, 32])
def test_crashed_and_stuck_inputs_become_faults_and_the_rest_go_on(workers, chunk):
    results = list(
        ordered_map(hostile, range(40), workers, window=8, chunk=chunk, timeout=0.5, on_fault=noted)
    )
    expected = {13: (13, "crashed"), 21: (21, "timeout"), 34: (34, "crashed")}
    assert results == [expected.get(x, x * x) for x in range(40)]


@fork_only
def test_a_fault_reason_says_what_happened():
    faults = {}

    def keep(x, fault):
        faults[x] = fault
        return None

    list(ordered_map(hostile, [13, 21, 34, 2], 2, timeout=0.5, on_fault=keep))
    assert faults[13] == Fault("crashed", "the decoding process was killed by SIGSEGV")
    assert faults[21] == Fault("timeout", "decoding took longer than the limit of 0.5 s")
    assert faults[34] == Fault("crashed", "the decoding process exited with status 3")


def failing(x: int) -> int:
    raise KeyError(x)


def test_an_exception_in_the_function_still_reaches_the_caller():
    with pytest.raises(KeyError):
        list(ordered_map(failing, range(3), 2, on_fault=noted))


@pytest.mark.parametrize("workers", [1, 2])
def test_guarded_map_keeps_order_and_runs_outside_the_caller(workers):
    pids = list(ordered_map(_pid_and_square, range(50), workers, window=8, chunk=3, on_fault=noted))
    assert [square for _, square in pids] == [x * x for x in range(50)]
    assert os.getpid() not in {pid for pid, _ in pids}


def _pid_and_square(x: int) -> tuple[int, int]:
    return os.getpid(), x * x


def test_guarded_map_pulls_inputs_a_window_at_a_time():
    pulled = []

    def inputs():
        for x in itertools.count():
            pulled.append(x)
            yield x

    results = ordered_map(square, inputs(), workers=2, window=10, chunk=4, on_fault=noted)
    assert [next(results) for _ in range(5)] == [0, 1, 4, 9, 16]
    # Up to two windows ahead of what was taken: bounded, although the inputs never end.
    assert len(pulled) <= 5 + 2 * 10
    results.close()


@pytest.mark.parametrize("guarded", [False, True], ids=["plain", "guarded"])
def test_inputs_in_flight_are_bounded_in_size_too(guarded):
    """Hundreds of large inputs (file contents) must not be read ahead just because they fit
    the window's count; one input always goes, however large."""
    pulled = []

    def inputs():
        for x in itertools.count():
            pulled.append(x)
            yield x

    faults = {"on_fault": noted} if guarded else {}
    sized = {"size": lambda x: 1000 if x == 3 else 10, "max_size": 50}
    results = ordered_map(square, inputs(), workers=2, window=100, chunk=4, **sized, **faults)
    assert [next(results) for _ in range(5)] == [0, 1, 4, 9, 16]
    # 50 bytes of 10-byte inputs beyond those taken (plain: two batches of half that each,
    # each batch with the one input that crosses its half), not two windows of 100.
    assert len(pulled) <= 5 + 6
    results.close()

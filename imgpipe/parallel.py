"""An ordered, memory-bounded parallel map over worker processes.

Results come back in input order whatever the number of workers, so stages that write them
produce the same bytes with 1 or N workers. Only a window of inputs is in flight at once, so
memory does not grow with the size of the dataset. Processes, not threads: decoding and
resizing in Pillow hold the GIL for much of their time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from functools import partial
from itertools import islice
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def _apply_all(fn: Callable[[T], R], inputs: list[T]) -> list[R]:
    return [fn(value) for value in inputs]


def ordered_map(
    fn: Callable[[T], R],
    inputs: Iterable[T],
    workers: int,
    window: int = 256,
    chunk: int = 32,
) -> Iterator[R]:
    """Yield ``fn(x)`` for each input, in order; ``fn`` must be a picklable top-level function.

    Inputs travel in chunks of at most ``chunk``: large enough that sending them costs little,
    small enough that no worker sits idle while another finishes a long chunk at the end.
    """
    inputs = iter(inputs)
    if workers <= 1:
        for value in inputs:
            yield fn(value)
        return
    with ProcessPoolExecutor(workers) as pool:
        pending: list[Future] = []
        while True:
            # Submit the next window before collecting the previous one, so workers never idle
            # while the parent reads inputs or writes results.
            batch = list(islice(inputs, window))
            step = max(1, min(chunk, -(-len(batch) // workers)))
            submitted = [
                pool.submit(partial(_apply_all, fn), batch[s : s + step])
                for s in range(0, len(batch), step)
            ]
            for future in pending:
                yield from future.result()
            if not batch:
                return
            pending = submitted

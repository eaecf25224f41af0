"""An ordered, memory-bounded parallel map over worker processes.

Results come back in input order whatever the number of workers, so stages that write them
produce the same bytes with 1 or N workers. Only a window of inputs is in flight at once, so
memory does not grow with the size of the dataset. Processes, not threads: decoding and
resizing in Pillow hold the GIL for much of their time.

Given ``on_fault``, the map also survives its workers: an input whose worker process dies (a
decoder's segfault, the out-of-memory killer) or runs past ``timeout`` seconds becomes
``on_fault(input, Fault)``, its worker is replaced, and the other inputs of its chunk go on in
the new one. Each worker counts every input it finishes in memory it shares with the parent,
so the parent always knows which input a dead or stuck worker was on, and the outcome does
not depend on how inputs were grouped into chunks or spread over workers. Answers travel a
few at a time (one message per input cost the parent about 30 us each, and the parent shares
the cores with the workers); inputs a dead worker finished but had not yet sent are simply
computed again by another, which gives the same results.

Given ``size`` and ``max_size``, the inputs in flight are bounded in bytes too: a window of
hundreds of inputs that are each large (file contents read by the parent) would otherwise
hold hundreds of times the largest one.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# How long a worker asked to stop may take before it is killed.
STOP_GRACE = 2.0
PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>
# A worker sends its answers once it holds this many, or has held one this long (seconds).
SEND_EVERY = 8
SEND_WITHIN = 0.05


@dataclass(frozen=True)
class Fault:
    """Why an input has no result: ``kind`` is "crashed" or "timeout"; ``reason`` is for people."""

    kind: str
    reason: str


def _apply_all(fn: Callable[[T], R], inputs: list[T]) -> list[R]:
    return [fn(value) for value in inputs]


_installed: list[Callable[[Any], Any]] = []  # in a pool's worker: the function it applies


def _install(fn: Callable[[Any], Any]) -> None:
    _installed[:] = [fn]


def _apply_installed(inputs: list[Any]) -> list[Any]:
    return _apply_all(_installed[0], inputs)


def ordered_map(
    fn: Callable[[T], R],
    inputs: Iterable[T],
    workers: int,
    window: int = 256,
    chunk: int = 32,
    *,
    timeout: float | None = None,
    on_fault: Callable[[T, Fault], R] | None = None,
    size: Callable[[T], int] | None = None,
    max_size: int | None = None,
) -> Iterator[R]:
    """Yield ``fn(x)`` for each input, in order; ``fn`` must be a picklable top-level function.

    Inputs travel in chunks of at most ``chunk``: large enough that sending them costs little,
    small enough that no worker sits idle while another finishes a long chunk at the end.

    With ``on_fault``, ``fn`` runs in child processes even for one worker (a crash must not take
    the caller down), each input gets at most ``timeout`` seconds (None: no limit), and a faulty
    input yields ``on_fault(input, fault)`` in its place.

    With ``max_size``, inputs read and not yet yielded total at most ``max_size`` by
    ``size(input)``, plus the one input that crosses it (one always goes, whatever its size).
    """
    if on_fault is not None:
        budget = _Budget(size, max_size)
        return _guarded_map(
            fn, iter(inputs), max(1, workers), window, chunk, timeout, on_fault, budget
        )
    # Two batches are in flight at once: each gets half.
    half = None if max_size is None else max(1, max_size // 2)
    return _plain_map(fn, iter(inputs), workers, window, chunk, lambda: _Budget(size, half))


class _Budget:
    """The total size of the inputs in flight, against its limit (none: no limit)."""

    def __init__(self, size: Callable[[Any], int] | None, limit: int | None) -> None:
        self.size = size
        self.limit = limit if size is not None else None
        self._used = 0

    def full(self) -> bool:
        return self.limit is not None and self._used >= self.limit

    def take(self, value: Any) -> None:
        if self.limit is not None:
            self._used += self.size(value)

    def give_back(self, value: Any) -> None:
        if self.limit is not None:
            self._used -= self.size(value)


def _take_batch(inputs: Iterator[T], window: int, budget: _Budget) -> list[T]:
    """Up to ``window`` inputs, fewer once they fill the budget."""
    batch: list[T] = []
    while len(batch) < window and not (batch and budget.full()):
        try:
            value = next(inputs)
        except StopIteration:
            break
        budget.take(value)
        batch.append(value)
    return batch


def _plain_map(
    fn: Callable[[T], R],
    inputs: Iterator[T],
    workers: int,
    window: int,
    chunk: int,
    new_budget: Callable[[], _Budget],
) -> Iterator[R]:
    if workers <= 1:
        for value in inputs:
            yield fn(value)
        return
    # The function goes to each worker once, not with every batch: it may carry large state
    # (a cache's index of hundreds of thousands of entries).
    with ProcessPoolExecutor(workers, initializer=_install, initargs=(fn,)) as pool:
        pending: list[Future] = []
        while True:
            # Submit the next window before collecting the previous one, so workers never idle
            # while the parent reads inputs or writes results.
            batch = _take_batch(inputs, window, new_budget())
            step = max(1, min(chunk, -(-len(batch) // workers)))
            submitted = [
                pool.submit(_apply_installed, batch[s : s + step])
                for s in range(0, len(batch), step)
            ]
            for future in pending:
                yield from future.result()
            if not batch:
                return
            pending = submitted


def _die_with_parent() -> None:
    """On Linux, have the kernel kill this worker when the parent dies.

    A worker stuck in a looping decoder would otherwise outlive a parent killed with SIGKILL.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the worker ends at its next read instead
        pass


def _serve(fn: Callable[[Any], Any], conn: Connection, done: Any) -> None:
    """A worker's loop: take a chunk, count each input as done, send answers a few at a time."""
    # Ctrl-C goes to the whole process group; the parent decides, workers must not die first
    # and be reported as crashed files.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    while True:
        try:
            batch = conn.recv()
        except EOFError:
            return
        if batch is None:
            return
        held: list[tuple[bool, Any]] = []
        oldest = 0.0
        for position, value in enumerate(batch):
            try:
                answer: tuple[bool, Any] = (True, fn(value))
            except Exception as err:  # a bug in fn: re-raised in the parent, as a pool does
                answer = (False, err)
            done.value += 1  # before the answer leaves: the parent counts what was lost
            if not held:
                oldest = time.monotonic()
            held.append(answer)
            last = position == len(batch) - 1
            if last or len(held) >= SEND_EVERY or time.monotonic() - oldest > SEND_WITHIN:
                _send_answers(conn, held)
                held = []


def _send_answers(conn: Connection, answers: list[tuple[bool, Any]]) -> None:
    try:
        conn.send(answers)
    except Exception:  # an unpicklable result or exception: find it, send the rest as they are
        for answer in answers:
            try:
                conn.send([answer])
            except Exception as err:
                conn.send([(False, RuntimeError(f"cannot send the result back: {err!r}"))])


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        cause = " (the out-of-memory killer, or a kill)" if name == "SIGKILL" else ""
        return f"the decoding process was killed by {name}{cause}"
    return f"the decoding process exited with status {exitcode}"


class _Worker(Generic[T]):
    """One child process, the inputs sent to it and not yet answered, and since when it works."""

    def __init__(self, context: Any, fn: Callable[[T], Any]) -> None:
        parent_end, child_end = context.Pipe()
        self.done = context.RawValue("q", 0)  # inputs the worker has finished, sent or not
        self.received = 0  # answers the parent has received
        self._counted = 0  # ``done`` when the parent last looked
        self.process = context.Process(target=_serve, args=(fn, child_end, self.done), daemon=True)
        self.process.start()
        child_end.close()
        self.conn: Connection = parent_end
        self.todo: deque[int] = deque()
        self.since = 0.0  # when the input in work began, as near as the parent can tell

    def send(self, indices: list[int], values: list[T]) -> None:
        self.todo.extend(indices)
        self.since = time.monotonic()
        self.conn.send(values)

    def receive(self) -> list[tuple[int, tuple[bool, Any]]]:
        """Every answer already sent; a closed pipe (a dead worker) just ends the list."""
        answers = []
        try:
            while self.todo and self.conn.poll():
                message = self.conn.recv()  # first: a dead worker's inputs stay in todo
                for answer in message:
                    answers.append((self.todo.popleft(), answer))
                self.received += len(message)
        except (EOFError, OSError):
            pass
        self.check_progress()
        return answers

    def check_progress(self) -> None:
        """Restart the clock of the input in work if the worker has finished one since."""
        done = self.done.value
        if done != self._counted:
            self._counted = done
            self.since = time.monotonic()

    def unsent(self) -> int:
        """Inputs at the front of ``todo`` that the worker finished but had not sent."""
        return max(0, self.done.value - self.received)

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.conn.close()

    def stop(self) -> None:
        with contextlib.suppress(OSError):  # already dead
            self.conn.send(None)
        self.process.join(STOP_GRACE)
        self.kill()


def _guarded_map(
    fn: Callable[[T], R],
    inputs: Iterator[T],
    workers: int,
    window: int,
    chunk: int,
    timeout: float | None,
    on_fault: Callable[[T, Fault], R],
    budget: _Budget,
) -> Iterator[R]:
    context = multiprocessing.get_context()
    pool: list[_Worker[T]] = []
    values: dict[int, T] = {}  # inputs read and not yet yielded
    results: dict[int, R] = {}
    queue: deque[int] = deque()  # inputs waiting for a worker; a faulty chunk's rest goes first
    taken = yielded = 0
    exhausted = False

    def settle(worker: _Worker[T], fault: Fault | None) -> None:
        for index, (ok, payload) in worker.receive():
            if not ok:
                raise payload
            results[index] = payload
        if fault is None:
            return
        if worker.todo:
            # Finished but unsent inputs go again, before the rest; the input after them is
            # the one the worker was on.
            pending = list(worker.todo)
            lost = min(worker.unsent(), len(pending))
            if lost < len(pending):
                culprit = pending.pop(lost)
                results[culprit] = on_fault(values[culprit], fault)
            queue.extendleft(reversed(pending))
            worker.todo.clear()
        pool.remove(worker)
        worker.kill()

    try:
        while True:
            # Read ahead up to two windows, so workers stay busy while results are yielded.
            while not exhausted and taken - yielded < 2 * window:
                if taken > yielded and budget.full():
                    break
                try:
                    values[taken] = next(inputs)
                except StopIteration:
                    exhausted = True
                    break
                budget.take(values[taken])
                queue.append(taken)
                taken += 1
            while yielded in results:
                budget.give_back(values.pop(yielded))
                yield results.pop(yielded)
                yielded += 1
            if exhausted and yielded == taken:
                return
            while len(pool) < min(workers, len(queue) + sum(bool(w.todo) for w in pool)):
                pool.append(_Worker(context, fn))
            idle = [w for w in pool if not w.todo]
            for worker in idle:
                if not queue:
                    break
                step = max(1, min(chunk, -(-len(queue) // len(idle))))
                # A chunk's share of the budget too: it is copied into the worker whole.
                share = _Budget(
                    budget.size, budget.limit // (2 * workers) if budget.limit else None
                )
                indices = []
                while queue and len(indices) < step and not (indices and share.full()):
                    indices.append(queue.popleft())
                    share.take(values[indices[-1]])
                worker.send(indices, [values[i] for i in indices])
            busy = [w for w in pool if w.todo]
            if not busy:
                continue
            for worker in busy:
                worker.check_progress()
            now = time.monotonic()
            wait_for = (
                None if timeout is None else max(0.0, min(w.since for w in busy) + timeout - now)
            )
            ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy], wait_for))
            for worker in busy:
                if worker.process.sentinel in ready and not worker.process.is_alive():
                    settle(worker, Fault("crashed", _death(worker.process.exitcode)))
                elif worker.conn in ready:
                    settle(worker, None)
            if timeout is not None:
                now = time.monotonic()
                for worker in [w for w in pool if w.todo and now - w.since > timeout]:
                    settle(worker, None)  # an answer that arrived meanwhile is not a timeout
                    if worker.todo and time.monotonic() - worker.since > timeout:
                        reason = f"decoding took longer than the limit of {timeout:g} s"
                        settle(worker, Fault("timeout", reason))
    finally:
        for worker in pool:
            worker.stop()

"""Dynamic batching: requests that arrive together go through the model as one batch.

One worker thread owns the model. `submit` puts a job on a bounded queue and returns a
`concurrent.futures.Future`; the worker takes the first waiting job, waits up to `max_wait_s`
for more (up to `max_batch_size`), and runs them together. A full queue refuses new jobs at
once (the server answers 503), and a job cancelled before it starts (the server's timeout) is
skipped, so an overloaded server sheds work instead of piling it up.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar

Item = TypeVar("Item")
Output = TypeVar("Output")

#: Runs a batch of items and returns, per item and in order, its output or the exception it
#: raised (so one bad item fails alone).
RunBatch = Callable[[Sequence[Item]], Sequence[Output | BaseException]]


class QueueFullError(RuntimeError):
    """The batcher's queue holds `max_queue` jobs already."""


@dataclass
class _Job(Generic[Item, Output]):
    item: Item
    future: Future[Output]


class Batcher(Generic[Item, Output]):
    """A bounded queue drained in batches by one worker thread (started at construction)."""

    def __init__(
        self,
        run_batch: RunBatch,
        *,
        max_batch_size: int = 8,
        max_wait_s: float = 0.01,
        max_queue: int = 64,
        name: str = "pixelreason-batcher",
    ) -> None:
        if max_batch_size < 1 or max_queue < 1 or max_wait_s < 0:
            raise ValueError("max_batch_size and max_queue must be >= 1, max_wait_s >= 0")
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self._queue: deque[_Job[Item, Output]] = deque()
        self._wakeup = threading.Condition()
        self._closed = False
        #: How many batches of each size the worker has run.
        self.batch_sizes: Counter[int] = Counter()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        """Jobs waiting for the worker (not counting the batch it is running)."""
        return len(self._queue)

    def submit(self, item: Item) -> Future[Output]:
        """Queue `item`; raise `QueueFullError` at once if `max_queue` jobs are waiting."""
        future: Future[Output] = Future()
        with self._wakeup:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            if len(self._queue) >= self.max_queue:
                raise QueueFullError(f"{len(self._queue)} requests are waiting already")
            self._queue.append(_Job(item, future))
            self._wakeup.notify()
        return future

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop taking jobs, cancel those still waiting and let the worker finish its batch."""
        with self._wakeup:
            self._closed = True
            waiting = list(self._queue)
            self._queue.clear()
            self._wakeup.notify_all()
        for job in waiting:
            job.future.cancel()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _next_batch(self) -> list[_Job[Item, Output]] | None:
        with self._wakeup:
            while not self._queue and not self._closed:
                self._wakeup.wait()
            if self._closed:
                return None
            # Requests that arrive within the window share the first one's batch.
            deadline = time.monotonic() + self.max_wait_s
            while len(self._queue) < self.max_batch_size and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._wakeup.wait(remaining)
            count = min(len(self._queue), self.max_batch_size)
            return [self._queue.popleft() for _ in range(count)]

    def _work(self) -> None:
        while (jobs := self._next_batch()) is not None:
            # Jobs whose caller gave up (timeout) while they waited are dropped here.
            live = [job for job in jobs if job.future.set_running_or_notify_cancel()]
            if live:
                self.batch_sizes[len(live)] += 1
                self._run(live)

    def _run(self, jobs: list[_Job[Item, Output]]) -> None:
        try:
            outputs = list(self._run_batch([job.item for job in jobs]))
            if len(outputs) != len(jobs):
                raise RuntimeError(f"run_batch returned {len(outputs)} outputs for {len(jobs)}")
        except Exception as exc:
            if len(jobs) > 1:
                # Find the culprit: run each job alone so the others still get answers.
                for job in jobs:
                    self._run([job])
                return
            outputs = [exc]
        for job, output in zip(jobs, outputs, strict=True):
            if isinstance(output, BaseException):
                job.future.set_exception(output)
            else:
                job.future.set_result(output)

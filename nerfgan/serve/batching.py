"""Micro-batching: requests that arrive within a few milliseconds of each other share one engine call.

A :class:`MicroBatcher` owns one worker thread. ``submit(job)`` appends the job to a bounded queue (:class:`QueueFull`
when ``max_queue`` jobs already wait) and returns a :class:`concurrent.futures.Future`; an asyncio handler awaits it
with ``asyncio.wrap_future``, so the event loop never runs an engine call. The worker waits for a first job, then up
to ``max_wait_s`` for more while the queued jobs hold fewer than ``max_batch`` items (``size(job)``: images), takes
jobs from the front while they fit in ``max_batch`` (a larger job runs alone), and calls ``run_batch(jobs)`` -> one
result per job. When a merged batch raises, each of its jobs is run alone, so a bad job fails its own request only.
A job whose client went away is taken out of the queue at once (:meth:`MicroBatcher.abandon`): it is never run and
no longer holds a place in the queue (a future cancelled by other means is dropped when its batch forms).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar

J = TypeVar("J")
R = TypeVar("R")


class QueueFull(Exception):
    """The queue already holds max_queue jobs; ``retry_after_s``: a guess of when it will have room (>= 1 s)."""

    def __init__(self, depth: int, retry_after_s: int) -> None:
        super().__init__(f"the render queue is full ({depth} requests waiting); retry in {retry_after_s} s")
        self.depth, self.retry_after_s = depth, retry_after_s


class BatcherClosed(Exception):
    """The batcher was closed (the server is shutting down)."""


@dataclass(frozen=True)
class BatchStats:
    """Counters since start: jobs submitted, batches run (engine jobs), jobs refused with QueueFull, queue depth,
    jobs abandoned by their clients before they ran."""

    submitted: int
    batches: int
    refused: int
    queued: int
    abandoned: int = 0


class MicroBatcher(Generic[J, R]):
    """One worker thread merging jobs into batches (module docstring)."""

    def __init__(self, run_batch: Callable[[list[J]], list[R]], size: Callable[[J], int], max_batch: int = 16,
                 max_wait_s: float = 0.005, max_queue: int = 64, name: str = "nerfgan-batcher") -> None:
        self._run, self._size = run_batch, size
        self.max_batch, self.max_wait_s, self.max_queue = max_batch, max_wait_s, max_queue
        self._name = name
        self._cond = threading.Condition()
        self._queue: deque[tuple[J, Future[R]]] = deque()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._submitted = self._batches = self._refused = self._abandoned = 0
        self._batch_seconds = 0.1  # running mean of one batch's time, for Retry-After

    def submit(self, job: J) -> Future[R]:
        """Queue ``job``; the future gets its result or its exception. QueueFull / BatcherClosed when refused."""
        fut: Future[R] = Future()
        with self._cond:
            if self._closed:
                raise BatcherClosed("the server is shutting down")
            if len(self._queue) >= self.max_queue:
                self._refused += 1
                batches_ahead = math.ceil((len(self._queue) + 1) / self.max_batch)
                raise QueueFull(len(self._queue), max(1, math.ceil(batches_ahead * self._batch_seconds)))
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
                self._thread.start()
            self._queue.append((job, fut))
            self._submitted += 1
            self._cond.notify()
        return fut

    def reopen(self) -> None:
        """Accept jobs again after close() (an app whose lifespan starts again); its worker starts with the next job."""
        with self._cond:
            if self._thread is not None and self._thread.is_alive():
                return
            self._closed, self._thread = False, None

    def stats(self) -> BatchStats:
        with self._cond:
            return BatchStats(self._submitted, self._batches, self._refused, len(self._queue), self._abandoned)

    def abandon(self, fut: Future[R]) -> bool:
        """The client of ``fut``'s job went away: take the job out of the queue (True), or, when it already runs,
        let it finish unseen (False)."""
        with self._cond:
            for item in self._queue:
                if item[1] is fut:
                    self._queue.remove(item)
                    self._abandoned += 1
                    fut.cancel()
                    return True
        return False

    def close(self, timeout_s: float = 10.0) -> None:
        """Refuse new jobs, fail queued ones with BatcherClosed, and wait (bounded) for the running batch."""
        with self._cond:
            self._closed = True
            dropped = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
            thread = self._thread
        for _, fut in dropped:
            if fut.set_running_or_notify_cancel():
                fut.set_exception(BatcherClosed("the server is shutting down"))
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    # --- the worker ------------------------------------------------------------------------------------------
    def _queued_size(self) -> int:
        return sum(self._size(job) for job, _ in self._queue)

    def _take(self) -> list[tuple[J, Future[R]]] | None:
        """The next batch (None once closed): the first job, then the jobs that arrive within max_wait_s."""
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            deadline = time.monotonic() + self.max_wait_s
            while self._queued_size() < self.max_batch and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            if not self._queue:  # closed while waiting
                return None
            batch = [self._queue.popleft()]
            n = self._size(batch[0][0])
            while self._queue and n + self._size(self._queue[0][0]) <= self.max_batch:
                n += self._size(self._queue[0][0])
                batch.append(self._queue.popleft())
        return [(job, fut) for job, fut in batch if fut.set_running_or_notify_cancel()]

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            if not batch:
                continue
            start = time.monotonic()
            self._finish(batch)
            with self._cond:
                self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * (time.monotonic() - start)

    def _finish(self, batch: list[tuple[J, Future[R]]]) -> None:
        with self._cond:
            self._batches += 1
        try:
            results = self._run([job for job, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"run_batch returned {len(results)} results for {len(batch)} jobs")
        except Exception as e:
            if len(batch) == 1:
                batch[0][1].set_exception(e)
                return
            for item in batch:  # find the bad job: each alone
                self._finish([item])
            return
        for (_, fut), result in zip(batch, results):
            fut.set_result(result)

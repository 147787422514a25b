"""Greedy micro-batching of embedding work from concurrent requests.

Requests hand their aligned crops to ``MicroBatcher.submit`` (from any thread). ``workers``
threads each take the oldest waiting job and, without waiting for more to arrive, every other
job already queued up to ``max_batch`` crops, run the model once on the stacked crops and hand
each job its rows. Under no load a job runs alone (no added latency); under load jobs are
merged. ``max_batch=1`` turns merging off: each request then runs the model in its own thread,
at most ``workers`` at a time, which on these 2-core machines is the faster setting for
MobileFaceNet (``make bench-serve`` measures both).

The queue is not bounded here: the service admits at most ``MAX_CONCURRENT_REQUESTS`` requests
(each with at most ``max_batch_images`` crops), which bounds it.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

#: ``fn(crops [N, H, W, 3] uint8) -> tuple of arrays, each with N rows``.
BatchFn = Callable[[np.ndarray], Sequence[np.ndarray]]


@dataclass
class _Job:
    crops: np.ndarray
    future: Future[tuple[np.ndarray, ...]]


class MicroBatcher:
    """Runs ``fn`` on crops merged from concurrent submissions.

    Args:
        fn: the batched computation; it must return arrays whose first dimension is the number of
            crops it was given (e.g. ``(embeddings [N, D], quality [N])``).
        max_batch: crops merged into one call at most (a single larger job still runs whole).
        workers: threads calling ``fn`` concurrently (each should be single-threaded inside).
        name: thread-name prefix.
    """

    def __init__(self, fn: BatchFn, *, max_batch: int = 1, workers: int = 1, name: str = "batcher") -> None:
        if max_batch < 1 or workers < 1:
            raise ValueError(f"max_batch and workers must be >= 1, got {max_batch} and {workers}")
        self.fn = fn
        self.max_batch = int(max_batch)
        self.workers = int(workers)
        #: ``max_batch == 1``: nothing to merge, so ``__call__`` runs ``fn`` in the calling thread,
        #: at most ``workers`` at a time (saves a thread hand-off per request).
        self.direct = self.max_batch == 1
        self._slots = threading.BoundedSemaphore(self.workers)
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._closed = False
        self._threads = (
            []
            if self.direct
            else [threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True) for i in range(workers)]
        )
        #: Number of ``fn`` calls and crops run (for logs and the benchmark).
        self.calls = 0
        self.crops = 0
        self._stats_lock = threading.Lock()
        for t in self._threads:
            t.start()

    def submit(self, crops: np.ndarray) -> Future[tuple[np.ndarray, ...]]:
        """Queue ``crops`` (uint8 ``[N, H, W, 3]``, N >= 1); the future gets ``fn``'s rows for them.

        In direct mode (``max_batch == 1``) the work runs now, in the calling thread, and the
        future comes back done.
        """
        if self._closed:
            raise RuntimeError("the batcher is closed")
        if crops.ndim != 4 or len(crops) == 0:
            raise ValueError(f"crops must be [N, H, W, C] with N >= 1, got shape {list(crops.shape)}")
        fut: Future[tuple[np.ndarray, ...]] = Future()
        job = _Job(crops, fut)
        if self.direct:
            fut.set_running_or_notify_cancel()
            with self._slots:
                self._run_jobs([job])
        else:
            self._queue.put(job)
        return fut

    def __call__(self, crops: np.ndarray) -> tuple[np.ndarray, ...]:
        """Submit and wait (call from a worker thread, never from the event loop)."""
        return self.submit(crops).result()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the workers after the jobs already queued."""
        if self._closed:
            return
        self._closed = True
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join(timeout)

    def _take(self, first: _Job) -> tuple[list[_Job], bool]:
        """``first`` plus whatever is queued now, up to ``max_batch`` crops; True if a stop was seen."""
        jobs, n = [first], len(first.crops)
        while n < self.max_batch:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                return jobs, True
            jobs.append(nxt)
            n += len(nxt.crops)
        return jobs, False

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs, stop = self._take(first)
            jobs = [j for j in jobs if j.future.set_running_or_notify_cancel()]
            if jobs:
                self._run_jobs(jobs)
            if stop:
                return

    def _run_jobs(self, jobs: list[_Job]) -> None:
        crops = jobs[0].crops if len(jobs) == 1 else np.concatenate([j.crops for j in jobs])
        try:
            outs = tuple(self.fn(crops))
            for o in outs:
                if len(o) != len(crops):
                    raise RuntimeError(f"batch function returned {len(o)} rows for {len(crops)} crops")
        except Exception as e:  # handed to every waiting request, which maps it to a typed error
            for j in jobs:
                j.future.set_exception(e)
            return
        with self._stats_lock:
            self.calls += 1
            self.crops += len(crops)
        start = 0
        for j in jobs:
            stop = start + len(j.crops)
            j.future.set_result(tuple(o[start:stop] for o in outs))
            start = stop

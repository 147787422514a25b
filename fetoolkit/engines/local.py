"""``engine=local``: shards computed by ``workers`` processes on this machine.

Each worker (a ``spawn``-ed process, so no OpenMP state is inherited from the parent) sets its
intra-op threads (one by default), builds its detector and model once, then takes shards from a
shared queue until none is left, writing each shard file itself (whole: temporary file, then
rename). Only the parent records shards in the manifest, as their "done" messages arrive, so a
shard is listed only once its file is complete. Workers die with the parent (``PR_SET_PDEATHSIG``
on Linux): a ``kill -9`` of the job leaves no process computing behind it.

``workers=1`` computes in this process (no start-up of a second one), with the same threads.
A script that calls :func:`run_local` with more workers needs the usual ``if __name__ ==
"__main__":`` guard (``spawn`` imports the parent's main module in every worker).
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing as mp
import queue
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fetoolkit.extraction import (
    Cropper,
    EmbedWorker,
    ExtractSpec,
    ShardItems,
    compute_shard,
    peak_rss_mb,
    set_threads,
    worker_name,
)
from fetoolkit.store import StoreError, rows_table, write_shard

log = logging.getLogger(__name__)

#: ``on_shard(record, meta)``: called in the parent for every shard written.
OnShard = Callable[[dict[str, Any], dict[str, Any]], None]


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no orphaned workers)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def _shard(
    cropper: Cropper, embedder: EmbedWorker, root: Path, k: int, items: ShardItems, flip: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    t = time.perf_counter()
    rows = compute_shard(cropper, embedder, items)
    rec = write_shard(root, k, rows_table(rows, embedder.embedder.contract.embed_dim, flip))
    failures = [f"{p}: {f}" for p, f in zip(rows["path"], rows["failure"]) if f is not None]
    return rec, {
        "compute_s": time.perf_counter() - t,
        "worker": worker_name(),
        "failures": failures,
        "peak_rss_mb": peak_rss_mb(),
    }


def _worker_main(spec: ExtractSpec, root: str, tasks: Any, results: Any, landmarks_given: bool) -> None:
    """A worker process: build the models (the detector unless the images come with landmarks),
    then compute shards until the ``None`` sentinel."""
    _die_with_parent()
    name = worker_name()
    try:
        t0 = time.perf_counter()
        set_threads(spec.threads)
        embedder = EmbedWorker(spec)
        cropper = Cropper(spec, embedder.size)
        cropper.prepare(landmarks_given)
        results.put(("ready", name, time.perf_counter() - t0))
        while (task := tasks.get()) is not None:
            k, items = task
            rec, meta = _shard(cropper, embedder, Path(root), k, items, spec.flip)
            results.put(("done", name, rec, meta))
        results.put(("exit", name, peak_rss_mb()))
    except StoreError as e:  # a write that failed (a full disk, a file-size limit): its one line, named
        results.put(("store_error", name, str(e)))
    except BaseException:  # the parent stops the run and shows the traceback
        results.put(("error", name, traceback.format_exc()))


def run_local(
    spec: ExtractSpec,
    jobs: Sequence[tuple[int, ShardItems]],
    root: Path,
    on_shard: OnShard,
    *,
    workers: int,
    embedder: EmbedWorker | None = None,
) -> dict[str, Any]:
    """Compute ``jobs`` (shard index, its images) with ``workers`` processes.

    Args:
        spec: what workers build.
        jobs: the shards to compute.
        root: the store folder.
        on_shard: the parent's callback for each shard written.
        workers: processes (1: in this process, with ``embedder`` when given).
        embedder: a ready model for the in-process case.

    Returns:
        ``{"startup_s", "teardown_s", "workers": {name: {"peak_rss_mb", "shards", "compute_s",
        "startup_s"}}}``: start-up until every worker has its models, teardown from the last shard
        recorded until every worker process has exited (0 in this process).

    Raises:
        RuntimeError: a worker failed (its traceback in the message) or died.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    stats: dict[str, dict[str, Any]] = {}
    if workers == 1 or len(jobs) <= 1:
        return _run_inline(spec, jobs, root, on_shard, embedder, stats)
    workers = min(workers, len(jobs))
    ctx = mp.get_context("spawn")
    tasks, results = ctx.Queue(), ctx.Queue()
    t0 = time.perf_counter()
    landmarks_given = all(items.landmarks is not None for _, items in jobs)
    procs = [
        ctx.Process(target=_worker_main, args=(spec, str(root), tasks, results, landmarks_given), daemon=True)
        for _ in range(workers)
    ]
    for p in procs:
        p.start()
    try:
        ready = 0
        while ready < workers:
            msg = _next(results, procs)
            if msg[0] == "error":
                raise RuntimeError(f"extract worker {msg[1]} failed:\n{msg[2]}")
            if msg[0] == "ready":
                ready += 1
                stats[msg[1]] = {"startup_s": round(msg[2], 3), "shards": 0, "compute_s": 0.0}
        startup = time.perf_counter() - t0
        for job in jobs:
            tasks.put(job)
        for _ in procs:
            tasks.put(None)
        done, exited, last = 0, 0, time.perf_counter()
        while done < len(jobs) or exited < workers:
            msg = _next(results, procs)
            if msg[0] == "error":
                raise RuntimeError(f"extract worker {msg[1]} failed:\n{msg[2]}")
            if msg[0] == "done":
                _, name, rec, meta = msg
                done += 1
                s = stats[name]
                s["shards"] += 1
                s["compute_s"] = round(s["compute_s"] + meta["compute_s"], 3)
                s["peak_rss_mb"] = round(meta["peak_rss_mb"], 1)
                on_shard(rec, meta)
                last = time.perf_counter()
            elif msg[0] == "exit":
                exited += 1
                stats[msg[1]]["peak_rss_mb"] = round(msg[2], 1)
        for p in procs:
            p.join(timeout=10)
        teardown = time.perf_counter() - last
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
    return {"startup_s": round(startup, 3), "teardown_s": round(teardown, 3), "workers": stats}


def _next(results: Any, procs: Sequence[Any]) -> tuple[Any, ...]:
    """The next worker message; a worker dead without saying why stops the run, and a worker's
    :class:`StoreError` is raised here as it was raised there."""
    while True:
        try:
            msg = results.get(timeout=1.0)
        except queue.Empty:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(
                    f"extract worker pid {dead[0].pid} died (exit code {dead[0].exitcode}; -9: killed, e.g. out of "
                    "memory): the shards written so far are kept, run the command again to resume"
                ) from None
            continue
        if msg[0] == "store_error":
            raise StoreError(msg[2])
        return msg


def _run_inline(
    spec: ExtractSpec,
    jobs: Sequence[tuple[int, ShardItems]],
    root: Path,
    on_shard: OnShard,
    embedder: EmbedWorker | None,
    stats: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """One worker: this process, its torch threads set for the run and restored after."""
    import torch

    before = torch.get_num_threads()
    t0 = time.perf_counter()
    try:
        set_threads(spec.threads)
        embedder = embedder or EmbedWorker(spec)
        cropper = Cropper(spec, embedder.size)
        cropper.prepare(all(items.landmarks is not None for _, items in jobs))
        name = worker_name()
        startup = time.perf_counter() - t0
        s = stats[name] = {"startup_s": round(startup, 3), "shards": 0, "compute_s": 0.0}
        for k, items in jobs:
            rec, meta = _shard(cropper, embedder, root, k, items, spec.flip)
            s["shards"] += 1
            s["compute_s"] = round(s["compute_s"] + meta["compute_s"], 3)
            on_shard(rec, meta)
        s["peak_rss_mb"] = round(peak_rss_mb(), 1)
    finally:
        torch.set_num_threads(before)
    return {"startup_s": round(startup, 3), "teardown_s": 0.0, "workers": stats}

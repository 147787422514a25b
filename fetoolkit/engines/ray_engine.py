"""``engine=ray``: the same shards, computed by Ray Data on a Ray cluster (or a local one).

The pipeline (one Ray Data dataset, streamed):

1. ``ray.data.from_items``: the images of the missing shards (index, path, sha256, given landmarks
   or the encoded bytes), in blocks of ``ray.detect_batch`` images;
2. ``map_batches(crop_batch)``: read + detect + align as stateless CPU tasks (``num_cpus=1`` each;
   Ray runs as many at once as the cluster has CPUs); the detector is built once per worker process;
3. ``map_batches(EmbedActor)``: the model in a pool of ``ray.embed_actors`` actors
   (``ActorPoolStrategy``; default one per GPU, or one per CPU on a CPU cluster), loaded once per
   actor (``num_gpus=1`` each when the cluster has GPUs: a torch model then runs on the actor's GPU);
4. the driver streams the rows back (``iter_batches``), gathers them by shard, and writes each
   shard whole with the same name and rows as ``engine=local`` as soon as all its rows are in.

Tasks lost to a dead worker or node are retried by Ray Data (its map tasks run with
``max_retries=-1``, its actors with ``max_restarts=-1``); only complete shards are recorded, so an
interrupted run resumes like a local one. ``ray.address=auto`` (or ``ray://...`` / ``HOST:PORT``)
joins a running cluster; without it a local one with ``ray.num_cpus`` (default: ``workers``) CPUs is
started and stopped. Image paths must be readable at the same path on every node (a shared
filesystem); the store is written by the driver only.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fetoolkit.extraction import (
    Cropper,
    EmbedWorker,
    ExtractSpec,
    ShardItems,
    crop_columns,
    peak_rss_mb,
    set_threads,
    worker_name,
)
from fetoolkit.store import rows_table, write_shard

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayCfg:
    """``ray`` in ``configs/extract.yaml``.

    Attributes:
        address: a running cluster (``auto``, ``HOST:PORT``, ``ray://HOST:10001``); None: start a local one.
        num_cpus: CPUs of the local cluster (None: ``workers``).
        detect_batch: images per detection task.
        embed_batch: crops per call of an embedding actor.
        embed_actors: embedding actors (None: 1 per GPU with GPUs, else 1 per CPU of the cluster:
            with one, embedding (2/3 of the CPU time per ORL image, flip included) ran in a single
            process and Ray reached 0.71-0.75 of ``engine=local`` on 2 CPUs; with two, 0.93).
        embed_num_cpus: CPUs reserved per embedding actor. 0 (default): the actor is not counted,
            so the detection tasks (``num_cpus=1`` each, the costly stage on a CPU) take every core
            and the actor shares them (any reservation, even 0.25, keeps a whole detection task
            from starting on a 2-CPU node); on a GPU node the actor's time is its GPU's.
        num_gpus: GPUs per embedding actor; None: 1 when the cluster has GPUs, else 0.
    """

    address: str | None = None
    num_cpus: int | None = None
    detect_batch: int = 8
    embed_batch: int = 32
    embed_actors: int | None = None
    embed_num_cpus: float = 0.0
    num_gpus: float | None = None


#: The cropper of this worker process: ``[(spec, cropper)]`` (Ray reuses worker processes across tasks).
_CROPPER: list[tuple[ExtractSpec, Cropper]] = []


def crop_batch(batch: dict[str, np.ndarray], spec: ExtractSpec, size: tuple[int, int]) -> dict[str, Any]:
    """Stage 1 (a Ray task): read, detect and align a batch of images; one row per image out."""
    if not _CROPPER or _CROPPER[0][0] != spec:  # built once per worker process
        set_threads(spec.threads)
        _CROPPER[:] = [(spec, Cropper(spec, size))]
    cropper = _CROPPER[0][1]
    lm = batch.get("landmarks")
    items = ShardItems(
        np.asarray(batch["index"], np.int64),
        [str(p) for p in batch["path"]],
        [None if s is None else str(s) for s in batch["image_sha256"]],
        None if lm is None else np.asarray(lm, np.float32).reshape(-1, 5, 2),
        None if "image" not in batch else [bytes(b) for b in batch["image"]],
    )
    crops = cropper.crop(items)
    cols = crop_columns(items, crops)
    return {
        **{k: (np.asarray(v, dtype=object) if isinstance(v, list) else v) for k, v in cols.items()},
        "face": crops.faces,
        "crop_worker": np.asarray([worker_name()] * len(items.paths), dtype=object),
        "crop_rss_mb": np.full(len(items.paths), peak_rss_mb(), np.float32),
    }


class EmbedActor:
    """Stage 2 (a Ray actor): the model, loaded once; crops in, embeddings out (the crops dropped)."""

    def __init__(self, spec: ExtractSpec) -> None:
        set_threads(spec.threads)
        self.worker = EmbedWorker(spec)
        _to_gpu(self.worker)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        ok = np.asarray(batch["ok"], bool)
        faces = np.asarray(batch["face"], np.uint8)
        out = {k: v for k, v in batch.items() if k != "face"}
        out.update(self.worker.embed(faces, ok))
        out["embed_worker"] = np.asarray([worker_name()] * len(ok), dtype=object)
        out["embed_rss_mb"] = np.full(len(ok), peak_rss_mb(), np.float32)
        return out


def _to_gpu(worker: EmbedWorker) -> None:
    """Move a torch model onto this actor's GPU when Ray gave it one."""
    import torch

    module = getattr(worker.embedder, "module", None)
    if module is None or not torch.cuda.is_available():
        return
    module.to("cuda")
    inner = worker.embedder

    @torch.inference_mode()
    def embed_raw(faces: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(inner.contract.preprocess(faces)).to("cuda")
        return module(x).float().cpu().numpy()

    inner.embed_raw = embed_raw  # type: ignore[method-assign]
    log.info("embedding actor %s: model on %s", worker_name(), torch.cuda.get_device_name())


def start_ray(cfg: RayCfg, workers: int) -> tuple[bool, float]:
    """Join ``cfg.address`` or start a local cluster; returns (started here, seconds it took)."""
    import ray

    t = time.perf_counter()
    if ray.is_initialized():
        return False, 0.0
    if cfg.address:
        ray.init(address=cfg.address, logging_level=logging.WARNING, log_to_driver=False)
    else:
        ray.init(
            num_cpus=cfg.num_cpus or workers,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
    return True, time.perf_counter() - t


def run_ray(
    spec: ExtractSpec,
    jobs: Sequence[tuple[int, ShardItems]],
    root: Path,
    on_shard: Any,
    *,
    workers: int,
    cfg: RayCfg,
    embed_dim: int,
    size: tuple[int, int],
    progress: bool = True,
) -> dict[str, Any]:
    """Compute ``jobs`` (shard index, its images) on Ray; ``on_shard(record, meta)`` per shard written.

    Returns:
        ``{"startup_s" (``ray_init_s`` + ``first_rows_s``), "ray_init_s", "first_rows_s",
        "steady_images_per_s", "address", "cluster", "nodes", "embed_actors",
        "workers": {name: {"peak_rss_mb", "stages", "rows"}}}``.
    """
    import ray
    import ray.data

    started, init_s = start_ray(cfg, workers)
    try:
        resources = ray.cluster_resources()
        n_gpus = float(resources.get("GPU", 0))
        num_gpus = cfg.num_gpus if cfg.num_gpus is not None else (1.0 if n_gpus >= 1 else 0.0)
        cpus = max(1, int(resources.get("CPU", 1)))
        actors = cfg.embed_actors or (max(1, int(n_gpus)) if num_gpus else cpus)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = progress
        ctx.enable_operator_progress_bars = progress
        expected = {k: len(items.paths) for k, items in jobs}
        rows = [r for _, items in jobs for r in _item_rows(items)]
        n = len(rows)
        ds = ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(n / cfg.detect_batch)))
        ds = ds.map_batches(
            crop_batch,
            fn_kwargs={"spec": spec, "size": size},
            batch_size=None,  # one block (about detect_batch images) per task: no bundling of small blocks
            batch_format="numpy",
            num_cpus=1,
        )
        ds = ds.map_batches(
            EmbedActor,
            fn_constructor_kwargs={"spec": spec},
            batch_size=cfg.embed_batch,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=cfg.embed_num_cpus,
            num_gpus=num_gpus or None,
        )
        shard_of = {int(i): k for k, items in jobs for i in items.index}
        pending: dict[int, list[dict[str, Any]]] = {}
        stats: dict[str, dict[str, Any]] = {}
        t0 = time.perf_counter()
        first_row_s, n_first, n_rows = None, 0, 0
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            if first_row_s is None:
                first_row_s, n_first = time.perf_counter() - t0, len(batch["index"])
            n_rows += len(batch["index"])
            log.debug("ray: %d rows back after %.1f s", n_rows, time.perf_counter() - t0)
            _worker_stats(batch, stats)
            for k, part in _split_by_shard(batch, shard_of).items():
                pending.setdefault(k, []).append(part)
                if sum(len(p["index"]) for p in pending[k]) == expected[k]:
                    _write(root, k, pending.pop(k), embed_dim, spec.flip, on_shard)
        t_end = time.perf_counter() - t0
        steady = None  # unmeasurable when every row came back in the first batch
        if first_row_s is not None and n_rows > n_first and t_end > first_row_s:
            steady = (n_rows - n_first) / (t_end - first_row_s)
        if pending:
            raise RuntimeError(f"Ray returned incomplete shards {sorted(pending)}: run the command again to resume")
        return {
            # Ray's start-up: the cluster (ray.init) and the stages' first rows (worker processes
            # importing torch and loading MTCNN / the model), reported apart from the throughput
            "startup_s": round(init_s + (first_row_s or 0.0), 3),
            "ray_init_s": round(init_s, 3),
            "first_rows_s": None if first_row_s is None else round(first_row_s, 3),
            # once started: the rows after the first batch over the time after it
            "steady_images_per_s": None if steady is None else round(steady, 3),
            "address": cfg.address or "local",
            "cluster": {k: resources.get(k) for k in ("CPU", "GPU", "memory")},
            "nodes": len(ray.nodes()),
            "embed_actors": actors,
            "embed_num_gpus": num_gpus,
            "workers": stats,
        }
    finally:
        if started:
            ray.shutdown()


def _item_rows(items: ShardItems) -> list[dict[str, Any]]:
    out = []
    for j, i in enumerate(items.index):
        r: dict[str, Any] = {"index": int(i), "path": items.paths[j], "image_sha256": items.sha256[j]}
        if items.landmarks is not None:
            r["landmarks"] = np.asarray(items.landmarks[j], np.float32).reshape(10)
        if items.images is not None:
            r["image"] = items.images[j]
        out.append(r)
    return out


def _split_by_shard(batch: dict[str, np.ndarray], shard_of: dict[int, int]) -> dict[int, dict[str, np.ndarray]]:
    ks = np.asarray([shard_of[int(i)] for i in batch["index"]])
    return {int(k): {c: v[ks == k] for c, v in batch.items()} for k in np.unique(ks)}


def _worker_stats(batch: dict[str, np.ndarray], stats: dict[str, dict[str, Any]]) -> None:
    for stage in ("crop", "embed"):
        for name, rss in zip(batch[f"{stage}_worker"], batch[f"{stage}_rss_mb"]):
            s = stats.setdefault(str(name), {"stages": [], "peak_rss_mb": 0.0, "rows": 0})
            if stage not in s["stages"]:
                s["stages"].append(stage)
            s["peak_rss_mb"] = round(max(s["peak_rss_mb"], float(rss)), 1)
            s["rows"] += 1


def _write(root: Path, k: int, parts: list[dict[str, np.ndarray]], dim: int, flip: bool, on_shard: Any) -> None:
    cols = {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}
    order = np.argsort(cols["index"], kind="stable")
    cols = {c: v[order] for c, v in cols.items()}
    rows = {
        **cols,
        # Arrow hands a string column's nulls back to numpy as None or NaN
        "failure": [f if isinstance(f, str) else None for f in cols["failure"]],
        "image_sha256": [s if isinstance(s, str) else None for s in cols["image_sha256"]],
    }
    rec = write_shard(root, k, rows_table(rows, dim, flip))
    failures = [f"{p}: {f}" for p, f in zip(rows["path"], rows["failure"]) if f is not None]
    on_shard(rec, {"failures": failures})

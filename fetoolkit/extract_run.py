"""What the extract job does, as a library: ``run(cfg)`` for ``python -m fetoolkit.extract
model=arcface dataset=orl store=DIR`` (the job itself is :mod:`fetoolkit.jobs.extract`).

:func:`extract` takes the store's write lock (a second extract on it fails at once, naming the
holder), opens (or creates) the store, checks it was made with these weights and settings,
computes the shards its manifest does not list or that fail their check (damaged: named in the
log) with the chosen engine, records each as it is written, and appends this run (what it
computed, how long it took, on what CPU and ISA) to the manifest. A resume on another ISA than
the one the kept shards were computed on is logged and recorded (``runs[].isa_differs_from_runs``;
whether the rows are of several ISAs is derived: :func:`fetoolkit.store_verify.isa_mixed`).
"""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from fetoolkit.config import detector_cfg, pipeline_cfg
from fetoolkit.cpu import machine_info
from fetoolkit.engines.local import run_local
from fetoolkit.engines.ray_engine import RayCfg, run_ray
from fetoolkit.extraction import EmbedWorker, ExtractSpec, image_list, items_of
from fetoolkit.sharing import usable_cores
from fetoolkit.store import ImageList, Store, check_folder, open_store
from fetoolkit.store_identity import store_identity
from fetoolkit.store_lock import store_lock
from fetoolkit.store_verify import isa_of, isa_warning
from fetoolkit.versions import library_versions

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")


def default_workers() -> int:
    """One worker per core this process may run on."""
    return usable_cores()


def run(cfg: DictConfig) -> dict[str, Any]:
    """Extract ``cfg.dataset`` (or ``cfg.images``) with ``cfg.model`` into ``cfg.store``; returns the run's summary."""
    if not cfg.get("store"):
        raise ValueError("name the store folder: store=DIR (created when missing, resumed when it exists)")
    if cfg.engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {cfg.engine!r}")
    images, aligned = image_list(None if cfg.get("images") else cfg.dataset, cfg.get("images"), int(cfg.seed))
    pipeline = pipeline_cfg(cfg)
    spec = ExtractSpec(
        model=cfg.model.name,
        weights=cfg.model.get("weights"),
        backend=cfg.backend.name,
        allow_mismatch=bool(cfg.model.get("allow_mismatch", False)),
        batch_size=int(pipeline.batch_size),
        pipeline=pipeline,
        detector=detector_cfg(cfg),
        aligned=aligned,
        flip=bool(cfg.flip),
        threads=None if cfg.threads is None else int(cfg.threads),
    )
    ray_cfg = RayCfg(**OmegaConf.to_container(cfg.ray, resolve=True))  # type: ignore[arg-type]
    return extract(
        spec,
        images,
        str(cfg.store),
        shard_size=int(cfg.shard_size),
        engine=str(cfg.engine),
        workers=int(cfg.workers) if cfg.workers else default_workers(),
        ray_cfg=ray_cfg,
        progress=pipeline.progress,
    )


def extract(
    spec: ExtractSpec,
    images: ImageList,
    store: str,
    *,
    shard_size: int = 1000,
    engine: str = "local",
    workers: int = 1,
    ray_cfg: RayCfg | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Compute the missing shards of the store at ``store`` for ``images``.

    Args:
        spec: model, pipeline, detector and threads of every worker.
        images: the image list (see :func:`fetoolkit.extraction.image_list`).
        store: the store folder.
        shard_size: images per shard (fixed when the store is made).
        engine: ``local`` (processes here) or ``ray`` (Ray Data).
        workers: processes (local) or CPUs of the local Ray cluster (ray, unless ``ray_cfg.num_cpus``).
        ray_cfg: Ray settings.
        progress: a progress bar over the images.

    Returns:
        ``{"store", "n_images", "n_done", "n_failed", "complete", "run"}`` (``run``: this run's manifest entry).

    Raises:
        fetoolkit.store.StoreError: a store made with other weights or settings, or of other images;
            a store another extract is writing (:class:`fetoolkit.store_lock.StoreBusy`); a failed write.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if spec.threads is not None and workers * spec.threads > default_workers():
        log.warning("%d workers x %d threads on %d cores: oversubscribed", workers, spec.threads, default_workers())
    root = Path(store).expanduser().resolve()
    check_folder(root)  # before the lock file is made in a folder that is not a store
    with store_lock(root):
        return _extract(spec, images, root, shard_size, engine, workers, ray_cfg, progress)


def _isa_check(st: Store, isa: dict[str, Any], run_info: dict[str, Any]) -> None:
    """Log and record (in ``run_info``) the runs whose kept shards were computed on another ISA than ``isa``."""
    runs, warning = isa_warning(st.root, st.manifest, isa)
    if warning:
        run_info["isa_differs_from_runs"] = runs
        log.warning("%s", warning)


def _extract(
    spec: ExtractSpec,
    images: ImageList,
    store: Path,
    shard_size: int,
    engine: str,
    workers: int,
    ray_cfg: RayCfg | None,
    progress: bool,
) -> dict[str, Any]:
    """:func:`extract` inside the store's lock."""
    t_start = time.perf_counter()
    driver = EmbedWorker(spec)  # the identity needs the model's weights and contract; reused by workers=1
    dim, size = driver.embedder.contract.embed_dim, driver.size
    identity = store_identity(
        driver.embedder,
        spec.pipeline,
        spec.detector,
        aligned=spec.aligned,
        given_landmarks=images.landmarks is not None,
        flip=spec.flip,
        threads=spec.threads,
    )
    machine = machine_info(spec.threads)
    st = open_store(
        store,
        identity,
        images,
        shard_size,
        embed_dim=dim,
        flip=spec.flip,
        about={"versions": library_versions(), "machine": machine},
    )
    plan = st.plan()
    jobs = [(k, items_of(images, *plan[k])) for k in st.missing()]
    n_todo = sum(len(it.paths) for _, it in jobs)
    log.info(
        "store %s: %d of %d shards to compute (%d images%s) with engine=%s, %d workers x %s threads",
        st.root,
        len(jobs),
        len(plan),
        n_todo,
        f"; {len(st.damaged)} damaged, computed again" if st.damaged else "",
        engine,
        workers,
        spec.threads or "default",
    )
    run_info: dict[str, Any] = {
        "engine": engine,
        "workers": workers,
        "threads": spec.threads,
        "host": socket.gethostname(),
        "cpu": machine["cpu"],
        "isa": isa_of(machine),
        "n_planned": n_todo,
        "n_computed": 0,
        "n_shards_computed": 0,
    }
    if st.damaged:
        run_info["damaged_recomputed"] = [f for f, _ in st.damaged]
    if jobs:
        _isa_check(st, run_info["isa"], run_info)
    run = st.begin_run(run_info)
    failures: list[str] = []
    bar = tqdm(total=n_todo, desc=f"extract ({engine}, {workers} workers)", unit="img", disable=not progress)

    def on_shard(rec: dict[str, Any], meta: dict[str, Any]) -> None:
        st.record_shard(rec, run)
        failures.extend(meta.get("failures", []))
        bar.update(rec["n_rows"])

    t0 = time.perf_counter()
    report: dict[str, Any] = {"startup_s": 0.0, "workers": {}}
    try:
        if jobs and engine == "local":
            report = run_local(spec, jobs, st.root, on_shard, workers=workers, embedder=driver)
        elif jobs:
            report = run_ray(
                spec,
                jobs,
                st.root,
                on_shard,
                workers=workers,
                cfg=ray_cfg or RayCfg(),
                embed_dim=dim,
                size=size,
                progress=progress,
            )
    finally:
        bar.close()
    wall = time.perf_counter() - t0
    fixed = float(report.get("startup_s") or 0.0) + float(report.get("teardown_s") or 0.0)
    after = max(wall - fixed, 1e-9)
    run["timing_s"] = {
        "total": round(time.perf_counter() - t_start, 3),
        "engine": round(wall, 3),
        "startup": report.get("startup_s"),
        "teardown": report.get("teardown_s"),
        "after_startup": round(after, 3),
    }
    run["images_per_s"] = round(run["n_computed"] / max(wall, 1e-9), 3) if run["n_computed"] else None
    # once started: local, after every worker has its models and until the last shard is recorded
    # (the workers' exit is teardown); ray, after the first rows came back
    steady = report.get("steady_images_per_s")
    run["images_per_s_after_startup"] = (
        steady if steady is not None else (round(run["n_computed"] / after, 3) if run["n_computed"] else None)
    )
    run["n_failed"] = len(failures)
    run["engine_detail"] = report
    st.manifest.pop("isa_mixed", None)  # derived (store_verify.isa_mixed), no longer stored: never stale
    st.end_run(run)
    if failures:
        log.warning("%d of %d images computed did not enrol (first: %s)", len(failures), n_todo, failures[0])
    m = st.manifest
    log.info(
        "store %s: %d of %d images done (%d did not enrol in all); this run computed %d in %.1f s",
        st.root,
        m["n_done"],
        m["n_images"],
        m["n_failed"],
        run["n_computed"],
        wall,
    )
    return {
        "store": str(st.root),
        "n_images": m["n_images"],
        "n_done": m["n_done"],
        "n_failed": m["n_failed"],
        "complete": m["complete"],
        "run": run,
    }

"""Benchmark of extraction: ``make bench-extract`` -> ``bench_extract.json``.

    python -m fetoolkit.bench_extract --out bench_extract.json

Runs the real command (``python -m fetoolkit.extract``, one fresh process per case, each into a new
temporary store) for ``engine=local`` with 1 and 2 workers and ``engine=ray`` on a local cluster of
2 CPUs, on ORL (400 images, shards of 50) and on the in-the-wild photos (the four face_recognition
photos listed ``--wild-repeat`` times, shards of 2: four images alone make no throughput). Each case
reports what the store's manifest recorded for its run: images/s over the whole engine time and
after start-up (worker spawn and model loading for ``local``, ``ray.init`` for ``ray``), Ray's
start-up apart, the peak RSS of each worker process, and the load average before and after (the
machine may be shared: contention shows there). The rows of every case are compared with those
of the 1-worker case (min cosine). On ORL, two independent 1-worker runs started together give
the hardware's own two-core scaling, the ceiling of ``workers=2`` (``ceiling``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fetoolkit.cpu import machine_info
from fetoolkit.data.wild import load_wild

log = logging.getLogger(__name__)

CASES = (("local", 1), ("local", 2), ("ray", 2))


def _rows(store: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(f) for f in sorted(store.glob("shard-*.parquet"))]).sort_values("index")


def _min_cos(a: pd.DataFrame, b: pd.DataFrame) -> float | None:
    if list(a.path) != list(b.path) or list(a.ok) != list(b.ok):
        return None
    ea, eb = (np.stack(x.loc[x.ok, "embedding"].to_numpy()) for x in (a, b))
    return float((ea * eb).sum(axis=1).min())


def _command(source: list[str], shard_size: int, engine: str, workers: int, work: Path, store: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "fetoolkit.extract",
        *source,
        f"store={store}",
        f"engine={engine}",
        f"workers={workers}",
        f"shard_size={shard_size}",
        "pipeline.progress=false",
        f"hydra.run.dir={work}/run-{store.name}",
    ]


def _case(source: list[str], shard_size: int, engine: str, workers: int, work: Path) -> dict[str, Any]:
    store = work / f"{engine}-{workers}"
    cmd = _command(source, shard_size, engine, workers, work, store)
    load0 = os.getloadavg()
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    run = json.loads((store / "manifest.json").read_text())["runs"][-1]
    detail = run["engine_detail"]
    return {
        "engine": engine,
        "workers": workers,
        "command": " ".join(["python", *cmd[1:-1]]),
        "n_images": run["n_computed"],
        "process_wall_s": round(wall, 2),
        "engine_s": run["timing_s"]["engine"],
        "startup_s": run["timing_s"]["startup"],
        "ray_init_s": detail.get("ray_init_s"),
        "images_per_s": run["images_per_s"],
        "images_per_s_after_startup": run["images_per_s_after_startup"],
        "peak_rss_mb_per_worker": {k: v.get("peak_rss_mb") for k, v in detail["workers"].items()},
        "worker_stages": {k: v.get("stages", ["crop", "embed"]) for k, v in detail["workers"].items()},
        "loadavg_before_after": [round(load0[0], 2), round(os.getloadavg()[0], 2)],
        "store": store,
    }


def ceiling(source: list[str], shard_size: int, work: Path) -> dict[str, Any]:
    """What two cores give two independent 1-worker runs started together (two processes, two
    stores): the sum of their images/s over one run's alone is the most two workers can reach
    here, the hardware's own scaling (a shared VM's cores slow down when both are busy)."""
    procs, stores = [], [work / "ceiling-a", work / "ceiling-b"]
    for store in stores:
        cmd = _command(source, shard_size, "local", 1, work, store)
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"a ceiling run failed:\n{err[-3000:]}")
    runs = [json.loads((s / "manifest.json").read_text())["runs"][-1] for s in stores]
    return {
        "images_per_s_each": [r["images_per_s_after_startup"] for r in runs],
        "images_per_s_sum": round(sum(r["images_per_s_after_startup"] for r in runs), 3),
    }


def bench(source: list[str], shard_size: int, work: Path, *, with_ceiling: bool = False) -> dict[str, Any]:
    """The three cases on one image source; ratios against the 1-worker case (and, with
    ``with_ceiling``, against two independent 1-worker runs at once)."""
    cases = [_case(source, shard_size, e, w, work) for e, w in CASES]
    ref = _rows(cases[0]["store"])
    for c in cases:
        c["min_cosine_vs_local_1"] = _min_cos(ref, _rows(c.pop("store")))
    speed = {f"{c['engine']}_{c['workers']}": c["images_per_s_after_startup"] for c in cases}
    out: dict[str, Any] = {
        "cases": cases,
        "ratios_after_startup": {
            "local_2_over_local_1": round(speed["local_2"] / speed["local_1"], 3),
            "ray_2_over_local_2": round(speed["ray_2"] / speed["local_2"], 3),
        },
    }
    if with_ceiling:
        out["ceiling"] = c = ceiling(source, shard_size, work)
        out["ratios_after_startup"]["two_independent_runs_over_local_1"] = round(
            c["images_per_s_sum"] / speed["local_1"], 3
        )
        out["ratios_after_startup"]["local_2_over_two_independent_runs"] = round(
            speed["local_2"] / c["images_per_s_sum"], 3
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fetoolkit.bench_extract", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("bench_extract.json"))
    ap.add_argument("--wild-repeat", type=int, default=5, help="times the 4 wild photos are listed (default 5)")
    ap.add_argument("--only", nargs="*", choices=("orl", "wild"), help="run only these image sources")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report: dict[str, Any] = {"machine": machine_info(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    with tempfile.TemporaryDirectory(prefix="bench-extract-") as tmp:
        work = Path(tmp)
        if not args.only or "orl" in args.only:
            log.info("ORL: 400 images, shards of 50")
            report["orl"] = bench(["dataset=orl"], 50, work / "orl", with_ceiling=True)
        if not args.only or "wild" in args.only:
            photos = [str(p) for p in load_wild().values()] * args.wild_repeat
            lst = work / "wild.txt"
            lst.write_text("\n".join(photos) + "\n")
            log.info("wild: %d images (4 photos x %d), shards of 2", len(photos), args.wild_repeat)
            report["wild"] = bench([f"images={lst}"], 2, work / "wild")
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    log.info("wrote %s", args.out)
    for k in ("orl", "wild"):
        if k in report:
            log.info("%s: %s", k, report[k]["ratios_after_startup"])
    return 0


if __name__ == "__main__":
    sys.exit(main())

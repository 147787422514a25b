"""Benchmark of the metric functions at IJB-C scale: ``make bench-metrics`` -> ``bench_metrics.json``.

    python -m fetoolkit.bench_metrics --pairs 10000000 --out bench_metrics.json

Synthetic scores (1% genuine, the rest impostors, 10 folds, pairs over 20,000 images) stand in
for a 10-million-pair protocol (IJB-C 1:1 has 15.6 million). Every function runs in a fresh
process that loads only numpy and the two pure metric modules (``fetoolkit.metrics.verification``
and ``.quality``, by file: importing the ``fetoolkit`` package would load torch, 0.5 GB that the
metrics do not use). ``peak_rss_mb`` is that process's peak resident memory, inputs included;
``added_mb`` the growth over the resident memory just before the call. The ``suite`` row makes
the calls ``fetoolkit.evaluate`` makes on one score set, in one process, in order.
Times are wall-clock seconds of one call (the machine is shared: quote them with the
``cpu_peak_gflops`` measured in the same run, or as ratios).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

log = logging.getLogger("fetoolkit.bench_metrics")
HERE = Path(__file__).resolve().parents[1]  # fetoolkit/

N_IMAGES = 20_000
GENUINE_FRACTION = 0.01


def make_data(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Synthetic scored pairs: float64 scores ``[n]``, bool labels, int64 folds, image indices, quality."""
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < GENUINE_FRACTION
    scores = np.where(labels, rng.normal(0.6, 0.12, n), rng.normal(0.05, 0.1, n))
    return {
        "scores": scores,
        "labels": labels,
        "folds": rng.integers(0, 10, n).astype(np.int64),
        "idx_a": rng.integers(0, N_IMAGES, n).astype(np.int64),
        "idx_b": rng.integers(0, N_IMAGES, n).astype(np.int64),
        "quality": rng.random(N_IMAGES).astype(np.float32),
        "subject": rng.integers(0, 3_500, n).astype(np.int64),
    }


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    """Peak resident memory of this process (VmHWM: per address space, so not inherited at exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: KiB


def _load(name: str) -> ModuleType:
    """``fetoolkit/metrics/<name>.py`` as a standalone module (numpy only; no package import)."""
    key = f"_bench_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, HERE / "metrics" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[key] = mod
    spec.loader.exec_module(mod)
    return mod


def _cases(n_boot: int) -> dict[str, Callable[[dict[str, np.ndarray]], Any]]:
    vm, qm = _load("verification"), _load("quality")

    def erc(d: dict[str, np.ndarray]) -> Any:
        thr = vm.threshold_at_far(d["scores"], d["labels"], 1e-3)
        return qm.error_vs_reject(d["scores"], d["labels"], d["idx_a"], d["idx_b"], d["quality"], thr)

    def suite(d: dict[str, np.ndarray]) -> Any:
        # The calls fetoolkit.evaluate.evaluate makes (k-fold and ROC pairs being one set here).
        s, y, f = d["scores"], d["labels"], d["folds"]
        report = vm.verification_report(s, y, kfold=(s, y, f))
        _ = report.det
        decades = report.decades
        thr = decades["1e-3"].threshold
        q = d["quality"]
        for _ in range(6):  # six quality scores
            qm.error_vs_reject(s, y, d["idx_a"], d["idx_b"], q, thr)
        qm.genuine_spread(s, y, d["subject"])
        return len(decades)

    return {
        "roc_curve": lambda d: vm.roc_curve(d["scores"], d["labels"]),
        "auc(roc_curve)": lambda d: vm.auc(vm.roc_curve(d["scores"], d["labels"])),
        "det_curve": lambda d: vm.det_curve(d["scores"], d["labels"]),
        "eer": lambda d: vm.eer(d["scores"], d["labels"]),
        "tar_at_far(1e-3)": lambda d: vm.tar_at_far(d["scores"], d["labels"], 1e-3),
        "threshold_at_far(1e-6)": lambda d: vm.threshold_at_far(d["scores"], d["labels"], 1e-6),
        "tar_at_far_decades": lambda d: vm.tar_at_far_decades(d["scores"], d["labels"]),
        "kfold_accuracy": lambda d: vm.kfold_accuracy(d["scores"], d["labels"], d["folds"]),
        "verification_report(n_boot=0)": lambda d: vm.verification_report(
            d["scores"], d["labels"], d["folds"], fars=(1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
        ),
        "error_vs_reject": erc,
        "genuine_spread": lambda d: qm.genuine_spread(d["scores"], d["labels"], d["subject"]),
        f"roc_cis(n_boot={n_boot})": lambda d: vm.roc_cis(d["scores"], d["labels"], (1e-2, 1e-3, 1e-4), n_boot=n_boot),
        "suite (everything evaluate computes, no bootstrap)": suite,
    }


def _child(name: str, n: int, n_boot: int) -> dict[str, Any]:
    """Run one case in this (fresh) process and measure it."""
    d = make_data(n)
    fn = _cases(n_boot)[name]
    before = _rss_mb()
    t = time.perf_counter()
    fn(d)
    dt = time.perf_counter() - t
    peak = _peak_mb()
    return {
        "seconds": round(dt, 3),
        "peak_rss_mb": round(peak, 1),
        "added_mb": round(peak - before, 1),
        "input_rss_mb": round(before, 1),
    }


def cpu_peak_gflops(size: int = 1024, repeat: int = 3) -> float:
    """float32 matmul GFLOP/s (numpy/BLAS, this process's threads): a reference for the timings."""
    a = np.random.default_rng(0).random((size, size), dtype=np.float32)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best / 1e9


def run(n: int, n_boot: int, only: list[str] | None = None) -> dict[str, Any]:
    """Time every case in its own process; returns the JSON-ready report."""
    results: dict[str, Any] = {}
    for name in _cases(n_boot):
        if only and not any(o in name for o in only):
            continue
        # This file run as a script: a process that never imports the fetoolkit package.
        proc = subprocess.run(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--child",
                name,
                "--pairs",
                str(n),
                "--n-boot",
                str(n_boot),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"benchmark case {name!r} failed: {proc.stderr[-2000:]}")
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        results[name] = res
        log.info(
            "%-52s %7.2f s  peak %7.1f MB  (+%.1f MB over the inputs)",
            name,
            res["seconds"],
            res["peak_rss_mb"],
            res["added_mb"],
        )
    suite = next((v for k, v in results.items() if k.startswith("suite")), None)
    return {
        "n_pairs": n,
        "genuine_fraction": GENUINE_FRACTION,
        "n_images": N_IMAGES,
        "limits": {"seconds": 30, "peak_rss_mb": 2048},
        "suite_within_limits": None if suite is None else bool(suite["seconds"] < 30 and suite["peak_rss_mb"] < 2048),
        "results": results,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "cpu_peak_gflops": round(cpu_peak_gflops(), 1),
        },
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fetoolkit.bench_metrics", description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=10_000_000, help="scored pairs (default 10 million)")
    ap.add_argument("--n-boot", type=int, default=10, help="resamples in the roc_cis case (default 10)")
    ap.add_argument("--only", nargs="*", help="run only the cases whose name contains one of these")
    ap.add_argument("--out", type=Path, default=Path("bench_metrics.json"))
    ap.add_argument("--child", help=argparse.SUPPRESS)  # internal: run one case, print its JSON
    args = ap.parse_args(argv)
    if args.child:
        sys.stdout.write(json.dumps(_child(args.child, args.pairs, args.n_boot)) + "\n")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report = run(args.pairs, args.n_boot, args.only)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

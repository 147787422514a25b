"""Benchmark of the metric functions at IJB-C scale: ``make bench-metrics`` -> ``bench_metrics.json``.

    python -m fetoolkit.bench_metrics --pairs 10000000 --out bench_metrics.json

Synthetic scores (1% genuine, the rest impostors, 10 folds, pairs over 20,000 images) stand in
for a 10-million-pair protocol (IJB-C 1:1 has 15.6 million). Every function runs in a fresh
process that loads only numpy and the two pure metric modules (``fetoolkit.metrics.verification``
and ``.quality``, by file: importing the ``fetoolkit`` package would load torch, 0.5 GB that the
metrics do not use). ``peak_rss_mb`` is that process's peak resident memory, inputs included;
``added_mb`` the growth over the resident memory just before the call. The ``suite`` row makes
the calls ``fetoolkit.evaluate`` makes on one score set, in one process, in order.
The ``identification`` rows time the 1:N search (:mod:`fetoolkit.metrics.identification`,
faiss exact inner product) and the whole ``identification_report`` on a generated gallery of
``--gallery`` random L2-normalised float32 rows of 512 dimensions (default 1,000,000, seeded)
with ``--probes`` probes, half of them mated; ``--skip identification`` leaves them out.
The ``ijbc`` row runs the IJB-C 1:1 template protocol at IJB-C's size (469,375 images of 512
generated raw features and their mirrors, 23,124 templates, 15.6 million template pairs;
``--ijb-scale`` shrinks it): :func:`fetoolkit.templates.template_features`, the pair scores, and
``verification_report`` down to FAR 1e-6, each stage timed.
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
IDENT_DIM = 512
IDENT_MAX_RANK = 100  # identification_report's default: the search keeps the top 101 rows


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


def make_ident_data(n_gallery: int, n_probes: int, dim: int = IDENT_DIM, seed: int = 0) -> dict[str, np.ndarray]:
    """A synthetic 1:N set: float32 ``[G, dim]`` random unit gallery rows (subjects ``0..G-1``)
    and ``[Q, dim]`` probes, the first half noisy copies of random gallery rows (cosine to the
    mate about 0.2 to 0.7), the rest random (subjects ``G..``, non-mated)."""
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((n_gallery, dim), dtype=np.float32)
    for start in range(0, n_gallery, 65_536):  # normalise in place, a block at a time
        block = g[start : start + 65_536]
        block /= np.linalg.norm(block, axis=1, keepdims=True)
    n_mated = n_probes // 2
    mate = rng.choice(n_gallery, n_mated, replace=False)
    sigma = rng.uniform(0.05, 0.2, (n_mated, 1)).astype(np.float32)
    p = np.concatenate(
        [
            g[mate] + sigma * rng.standard_normal((n_mated, dim), dtype=np.float32),
            rng.standard_normal((n_probes - n_mated, dim), dtype=np.float32),
        ]
    )
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    subjects = np.concatenate([mate, n_gallery + np.arange(n_probes - n_mated)]).astype(np.int64)
    return {
        "gallery": g,
        "gallery_subjects": np.arange(n_gallery, dtype=np.int64),
        "probes": p,
        "probe_subjects": subjects,
    }


def _ident_cases() -> dict[str, Callable[[dict[str, np.ndarray]], Any]]:
    def srch(d: dict[str, np.ndarray]) -> Any:
        return _load("identification").search(d["gallery"], d["probes"], IDENT_MAX_RANK + 1)

    def report(d: dict[str, np.ndarray]) -> Any:
        im = _load("identification")
        return im.identification_report(
            d["gallery"], d["gallery_subjects"], d["probes"], d["probe_subjects"], max_rank=IDENT_MAX_RANK
        )

    return {
        f"identification: search(k={IDENT_MAX_RANK + 1})": srch,
        "identification: identification_report": report,
    }


IJB_CASE = "ijbc: template features, template pair scores, verification_report (generated features)"
#: IJB-C's size (insightface's IJB-C 1:1 meta files): images, templates, template pairs, genuine pairs.
IJBC = {"images": 469_375, "templates": 23_124, "pairs": 15_658_489, "genuine": 19_557, "subjects": 3_531}


def _load_file(path: Path, key: str) -> ModuleType:
    """A numpy-only module of the package, by file (no package import)."""
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[key] = mod
    spec.loader.exec_module(mod)
    return mod


def ijb_child(scale: float = 1.0, dim: int = 512, seed: int = 0) -> dict[str, Any]:
    """IJB-C-sized generated features through the template protocol, stage by stage, in this process.

    ``scale`` shrinks every count (tests use a small one). Features: per subject a random direction,
    per image that direction plus noise (raw norms spread by a quality factor), mirrored crops a
    little noise apart; each template one subject, 1-4 media.
    """
    tm = _load_file(HERE / "templates.py", "_bench_templates")
    vm = _load("verification")
    n_img = max(int(IJBC["images"] * scale), 200)
    n_t = max(int(IJBC["templates"] * scale), 40)
    n_p = max(int(IJBC["pairs"] * scale), 2_000)
    n_g = max(int(IJBC["genuine"] * scale), 20)
    n_s = max(int(IJBC["subjects"] * scale), 10)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    t_subject = rng.integers(0, n_s, n_t)
    image_t = np.concatenate([np.arange(n_t), rng.integers(0, n_t, n_img - n_t)])  # every template has an image
    image_m = image_t * 4 + rng.integers(0, 4, n_img)
    centre = rng.standard_normal((n_s, dim), dtype=np.float32)
    raw = centre[t_subject[image_t]]
    raw += rng.standard_normal((n_img, dim), dtype=np.float32) * 6.0
    raw *= rng.uniform(5, 30, (n_img, 1)).astype(np.float32)
    raw_flip = raw + rng.standard_normal((n_img, dim), dtype=np.float32)
    faceness = rng.uniform(0.5, 1.0, n_img).astype(np.float32)
    # genuine pairs: two templates of one subject; impostors: two templates of different subjects
    by_subject = np.argsort(t_subject, kind="stable")
    starts = np.searchsorted(t_subject[by_subject], np.arange(n_s + 1))
    sizes = np.diff(starts)
    pick = rng.choice(np.flatnonzero(sizes >= 2), n_g)
    pa = rng.integers(0, sizes[pick])
    pb = (pa + rng.integers(1, sizes[pick])) % sizes[pick]  # another template of the same subject
    ga, gb = by_subject[starts[pick] + pa], by_subject[starts[pick] + pb]
    ia, ib = rng.integers(0, n_t, n_p - n_g), rng.integers(0, n_t, n_p - n_g)
    keep = t_subject[ia] != t_subject[ib]
    idx_a = np.concatenate([ga, ia[keep]])
    idx_b = np.concatenate([gb, ib[keep]])
    labels = np.concatenate([np.ones(n_g, bool), np.zeros(int(keep.sum()), bool)])
    ok = np.ones(n_img, bool)
    gen_s = time.perf_counter() - t0
    before = _rss_mb()
    stages: dict[str, float] = {}
    t = time.perf_counter()
    templates = tm.Templates(image_t.astype(np.int64), image_m.astype(np.int64), np.arange(n_t), faceness)
    feats, t_ok = tm.template_features(raw, raw_flip, ok, templates, tm.TemplateCfg(True, False, False))
    stages["template_features"] = time.perf_counter() - t
    t = time.perf_counter()
    scores = tm.template_pair_scores(feats, idx_a, idx_b)
    stages["template_pair_scores"] = time.perf_counter() - t
    t = time.perf_counter()
    report = vm.verification_report(scores, labels, fars=(1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6))
    stages["verification_report(n_boot=0)"] = time.perf_counter() - t
    peak = _peak_mb()
    return {
        "n_images": n_img,
        "n_templates": n_t,
        "n_pairs": int(len(scores)),
        "n_genuine": int(labels.sum()),
        "dim": dim,
        "generate_s": round(gen_s, 2),
        "seconds": round(sum(stages.values()), 3),
        "stages_s": {k: round(v, 3) for k, v in stages.items()},
        "input_rss_mb": round(before, 1),
        "peak_rss_mb": round(peak, 1),
        "added_mb": round(peak - before, 1),
        "tar_at_far_1e-4": report.decades.get("1e-4").tar if "1e-4" in report.decades else None,
        "finest_decade": list(report.decades)[-1],
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


def _child(name: str, n: int, n_boot: int, n_gallery: int, n_probes: int, ijb_scale: float = 1.0) -> dict[str, Any]:
    """Run one case in this (fresh) process and measure it."""
    if name == IJB_CASE:
        return ijb_child(ijb_scale)
    ident = _ident_cases()
    if name in ident:
        t = time.perf_counter()
        d = make_ident_data(n_gallery, n_probes)
        gen = time.perf_counter() - t
        fn = ident[name]
        _load("identification")
        import faiss  # loaded before the clock starts, like numpy

        threads = faiss.omp_get_max_threads()
    else:
        d = make_data(n)
        fn = _cases(n_boot)[name]
    before = _rss_mb()
    t = time.perf_counter()
    out = fn(d)
    dt = time.perf_counter() - t
    peak = _peak_mb()
    res: dict[str, Any] = {
        "seconds": round(dt, 3),
        "peak_rss_mb": round(peak, 1),
        "added_mb": round(peak - before, 1),
        "input_rss_mb": round(before, 1),
    }
    if name in ident:
        res["data_seconds"] = round(gen, 2)
        res["faiss_threads"] = threads
        if hasattr(out, "to_dict"):
            res["figures"] = out.to_dict()
            res["timing_s"] = {k: round(v, 3) for k, v in out.timing_s.items()}
    return res


def cpu_peak_gflops(size: int = 1024, repeat: int = 3) -> float:
    """float32 matmul GFLOP/s (numpy/BLAS, this process's threads): a reference for the timings."""
    a = np.random.default_rng(0).random((size, size), dtype=np.float32)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best / 1e9


def run(
    n: int,
    n_boot: int,
    only: list[str] | None = None,
    skip: list[str] | None = None,
    n_gallery: int = 1_000_000,
    n_probes: int = 2_000,
    ijb_scale: float = 1.0,
) -> dict[str, Any]:
    """Time every case in its own process; returns the JSON-ready report.

    ``only`` / ``skip``: run only / leave out the cases whose name contains one of these."""
    results: dict[str, Any] = {}
    for name in [*_cases(n_boot), *_ident_cases(), IJB_CASE]:
        if only and not any(o in name for o in only):
            continue
        if skip and any(o in name for o in skip):
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
                "--gallery",
                str(n_gallery),
                "--probes",
                str(n_probes),
                "--ijb-scale",
                str(ijb_scale),
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
        "identification": {
            "n_gallery": n_gallery,
            "n_probes": n_probes,
            "n_mated": n_probes // 2,
            "dim": IDENT_DIM,
            "max_rank": IDENT_MAX_RANK,
        },
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
    ap.add_argument("--skip", nargs="*", help="leave out the cases whose name contains one of these")
    ap.add_argument("--gallery", type=int, default=1_000_000, help="identification gallery rows (default 1 million)")
    ap.add_argument("--probes", type=int, default=2_000, help="identification probes, half mated (default 2000)")
    ap.add_argument("--ijb-scale", type=float, default=1.0, help="IJB-C case size as a fraction of IJB-C's (default 1)")
    ap.add_argument("--out", type=Path, default=Path("bench_metrics.json"))
    ap.add_argument("--child", help=argparse.SUPPRESS)  # internal: run one case, print its JSON
    args = ap.parse_args(argv)
    if args.child:
        res = _child(args.child, args.pairs, args.n_boot, args.gallery, args.probes, args.ijb_scale)
        sys.stdout.write(json.dumps(res) + "\n")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report = run(args.pairs, args.n_boot, args.only, args.skip, args.gallery, args.probes, args.ijb_scale)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

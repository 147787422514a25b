"""Speed benchmark: ``python -m fetoolkit.bench --out bench.json`` (``make bench``).

For each model (the real ``arcface``, ``mobilefacenet512`` and ``sface``; ``iresnet50`` and
``iresnet100`` with random weights, which is fine for speed) it measures faces/s at batch 1 and
32, on 1 and 2 threads, in torch eager and in onnxruntime (our fp32 export, its int8 variant,
and the vendor file or its naive conversion where one exists), and expresses each figure as a
fraction of the machine's fp32 matmul peak measured in the same run (sgemm 2048^3 in torch
and numpy, per thread count, the higher of the two) and of the cores' physical fp32 peak
(``fraction_of_physical_peak``: FMA units x SIMD lanes x 2 flop x the clock measured with a
dependent-add chain x threads, ``fetoolkit.cpu.fp32_peak_gflops``). A fraction of the sgemm can
exceed 1.0 (a model's kernels can beat the library's sgemm); a fraction of the physical peak
cannot, and a value above 1.0 there means the clock or the lane count is wrong.

FLOPs per face are counted from the fp32 ONNX graph (``2 x`` the multiply-adds of every Conv
and Gemm/MatMul, shapes from ONNX shape inference at batch 1), so an achieved GFLOP/s is
``faces/s x GFLOP per face``.

int8 variants are onnxruntime static QDQ per-channel, calibrated on real aligned ORL faces
(image ``10.pgm`` of each subject). For the real models the bench also gives TAR@FAR=1e-3 and
10-fold accuracy on all of ORL for fp32 and int8; for the IResNets only speed (random weights).

The naive baseline of ``arcface`` is the vendor TFLite converted by ``tflite2onnx`` (it splits
every PReLU into Relu/Abs/Sub/Mul/Add and keeps the file's fixed batch of 2); when tflite2onnx
is missing, our module is exported with its PReLU written as ``relu(x) + a*(x-|x|)*0.5``
instead (``bench.json`` says which).

Timing: per (thread count, batch), every variant and a 2048^3 sgemm are called once to warm
up, then in round robins (one call each per round) until ``--seconds`` per call have passed,
at least ``--min-reps`` (3) and at most ``--max-reps`` (5) rounds (a call under 0.25 s is
re-run untimed right before its timed run, to warm its cache back up); medians. Each
figure's ``fraction_of_peak`` divides by the sgemm measured in the same round robins, so both
saw the same background load; ``fraction_of_best_peak`` divides by the best sgemm of the run.
Absolute numbers drift 30-40% on shared machines: read the fractions and the ratios.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn as nn

from fetoolkit.backends.onnx_graph import data_inputs
from fetoolkit.cpu import fp32_peak_gflops, machine_info
from fetoolkit.speed import (
    Variant,
    count_macs,
    make_call,
    matmul_peak,
    naive_arcface,
    peak_operands,
    time_group,
)
from fetoolkit.versions import library_versions

log = logging.getLogger(__name__)

REAL_MODELS = ("arcface", "mobilefacenet512", "sface")
IRESNETS = {"iresnet50": 50, "iresnet100": 100, "iresnet18": 18}
DEFAULT_MODELS = ("arcface", "mobilefacenet512", "sface", "iresnet50", "iresnet100")
FAR = 1e-3

#: Thresholds the bench checks (issue #3 part 6).
MIN_IRESNET_PEAK_FRACTION = 0.75
MIN_INT8_SPEEDUP = 1.5
MAX_INT8_TAR_DROP = 0.005
MIN_OURS_VS_NAIVE = 1.5


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------


@dataclass
class BenchSettings:
    """What to measure.

    Attributes:
        models: names among ``arcface``, ``mobilefacenet512``, ``sface``, ``iresnet18/50/100``.
        threads: thread counts.
        batches: batch sizes.
        seconds: timing budget per cell (after one warm-up call).
        max_reps: most timed calls per cell.
        min_reps: fewest timed calls per cell (medians of at least this many).
        int8: also build and time int8 variants.
        torch_eager: also time torch eager.
        accuracy: measure TAR/accuracy of fp32 vs int8 for the real models.
        calibration_images: ORL file names that calibrate int8.
        peak_size: matrix side of the sgemm peak measurement (2048 as in ASSETS.md).
    """

    models: Sequence[str] = DEFAULT_MODELS
    threads: Sequence[int] = (1, 2)
    batches: Sequence[int] = (1, 32)
    seconds: float = 2.0
    max_reps: int = 5
    min_reps: int = 3
    int8: bool = True
    torch_eager: bool = True
    accuracy: bool = True
    calibration_images: Sequence[str] = ("10.pgm",)
    peak_size: int = 2048
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Faces:
    """Real aligned faces for timing, calibration and accuracy.

    Attributes:
        faces: uint8 ``[N, 112, 112, 3]`` aligned crops (enrolled only).
        aligned: the ``fetoolkit.aligned.AlignedSet`` they come from (for pairs), or None.
        calib_mask: bool ``[M]`` over ``faces``: the int8 calibration faces.
        describe: which faces calibrate.
    """

    faces: np.ndarray
    aligned: Any
    calib_mask: np.ndarray
    describe: str


def orl_faces(calibration_images: Sequence[str]) -> Faces:
    """All of ORL aligned by the project pipeline (MTCNN, default settings)."""
    from omegaconf import OmegaConf

    from fetoolkit.aligned import align_dataset, select_images

    cfg = OmegaConf.create(
        {
            "dataset": {"name": "orl", "root": None, "n_folds": 10, "roc_pairs": "all"},
            "seed": 0,
            "detector": {"min_face_size": 20, "thresholds": [0.6, 0.7, 0.7], "factor": 0.709},
            "pipeline": {
                "align": True,
                "select": "most_confident",
                "swap_rb": False,
                "batch_size": 32,
                "progress": False,
            },
            "cache": {"dir": None, "crops": True},
        }
    )
    aligned = align_dataset(cfg)
    mask_all = select_images(aligned.data.paths, aligned.ok, list(calibration_images))
    names = [f"{p.parent.name}/{p.name}" for p, m in zip(aligned.data.paths, mask_all) if m]
    shown = names if len(names) <= 4 else [*names[:3], "...", names[-1]]
    return Faces(
        aligned.faces,
        aligned,
        mask_all[aligned.ok],
        f"{len(names)} ORL images aligned by the project pipeline ({', '.join(shown)})",
    )


def stable_random_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights that keep activations finite through 100+ residual blocks (speed runs only).

    arcface_torch's own init (conv N(0, 0.1), identity BatchNorms) overflows float32 in an
    untrained IResNet-100, which would make int8 calibration meaningless; here convs and the fc
    get fan-in scaled weights and each block's last BatchNorm scales its branch by 0.1.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, m in module.named_modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / fan_in**0.5)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm) and name.endswith("bn3"):
                m.weight.fill_(0.1)
    return module.eval()


def _model_variants(
    name: str, work: Path, faces: Faces, settings: BenchSettings
) -> tuple[dict[str, Any], list[Variant], Any]:
    """Build what to time for one model; returns (info, variants, contract)."""
    from fetoolkit.backends.export import export_onnx
    from fetoolkit.backends.quantize import quantize_int8
    from fetoolkit.models.factory import load_module, resolve_weights
    from fetoolkit.models.iresnet import iresnet
    from fetoolkit.models.registry import get_model_spec
    from fetoolkit.models.zoo.arcface_torch import ARCFACE_CONTRACT

    info: dict[str, Any] = {}
    variants: list[Variant] = []
    if name in IRESNETS:
        module: nn.Module | None = stable_random_(iresnet(IRESNETS[name]))
        contract = ARCFACE_CONTRACT
        sha = None
        info["weights"] = "random (speed only)"
        spec_name = f"arcface_r{IRESNETS[name]}"
    else:
        spec = get_model_spec(name)
        path, sha = resolve_weights(spec, None)
        contract = spec.contract
        spec_name = spec.name
        info["weights"] = f"real: {spec.weights.source if spec.weights else path}"
        module = load_module(spec, path, sha) if spec.arch is not None else None
        if spec.vendor_format == "onnx":
            inp = data_inputs(onnx.load(str(path)))[0]
            fixed = inp.type.tensor_type.shape.dim[0].dim_value or None
            variants.append(
                Variant("onnxruntime", "vendor", path=path, fixed_batch=fixed, note=f"vendor file {path.name}")
            )
    if module is not None:
        if settings.torch_eager:
            variants.append(Variant("torch", "fp32", module=module, note="torch eager"))
        t0 = time.perf_counter()
        ours = export_onnx(module, contract, work / f"{name}.onnx", name=spec_name, source_sha256=sha)
        info["export_s"] = round(time.perf_counter() - t0, 2)
        variants.append(Variant("onnxruntime", "fp32", path=ours, note="our export (fetoolkit.backends.export)"))
        if settings.int8:
            calib = contract.preprocess(faces.faces[faces.calib_mask])
            t0 = time.perf_counter()
            q = quantize_int8(ours, work / f"{name}.int8.onnx", calib, describe=faces.describe)
            info["quantize_s"] = round(time.perf_counter() - t0, 2)
            info["calibration"] = faces.describe
            variants.append(Variant("onnxruntime", "int8", path=q, note="static QDQ per-channel int8"))
        if name == "arcface":
            spec = get_model_spec(name)
            tfl, _ = resolve_weights(spec, None)
            npath, fixed, how = naive_arcface(tfl, module, work / "arcface_naive.onnx")
            variants.append(Variant("onnxruntime", "naive", path=npath, fixed_batch=fixed, note=how))
            if fixed and fixed not in settings.batches:  # like for like: ours at the naive file's batch
                variants.append(
                    Variant(
                        "onnxruntime",
                        f"fp32_b{fixed}",
                        path=ours,
                        fixed_batch=fixed,
                        note="our export at the naive file's fixed batch",
                    )
                )
    flops_src = next((v.path for v in variants if v.label == "fp32" and v.path is not None), None)
    flops_src = flops_src or next(v.path for v in variants if v.path is not None)
    macs = count_macs(onnx.load(str(flops_src)))
    info["gmacs_per_face"] = macs["total"] / 1e9
    info["gflop_per_face"] = 2 * macs["total"] / 1e9
    info["flops_counted_from"] = str(Path(flops_src).name)
    return info, variants, contract


def _accuracy(variants: list[Variant], contract: Any, faces: Faces) -> dict[str, Any]:
    """TAR@FAR=1e-3 and 10-fold accuracy of fp32 (our export) and int8 on all aligned faces."""
    from fetoolkit.agreement import compare, reference_from
    from fetoolkit.backends.onnx_backend import OnnxEmbedder
    from fetoolkit.metrics.parity import ParityTolerance

    by = {v.label: v for v in variants if v.engine == "onnxruntime"}
    if "fp32" not in by or "int8" not in by or faces.aligned is None:
        return {}
    ref = reference_from(OnnxEmbedder(by["fp32"].path).embed_raw(faces.faces), faces.aligned)
    held = np.zeros(len(faces.aligned.ok), bool)
    held[np.flatnonzero(faces.aligned.ok)[faces.calib_mask]] = True
    res = compare(
        ref,
        OnnxEmbedder(by["int8"].path).embed_raw(faces.faces),
        faces.aligned,
        ParityTolerance(min_cosine=None, max_flipped=None, max_tar_drop=MAX_INT8_TAR_DROP),
        held,
    )
    return {"reference": "our fp32 ONNX export", **{k: res[k] for k in res if k != "tolerance"}}


def run_bench(settings: BenchSettings, work: Path, faces: Faces | None = None) -> dict[str, Any]:
    """Measure everything ``settings`` asks for; returns the JSON-ready result."""
    t_start = time.perf_counter()
    faces = faces or orl_faces(settings.calibration_images)
    peaks = {str(t): matmul_peak(t, settings.peak_size) for t in settings.threads}
    log.info("matmul peak GFLOP/s: %s", {t: round(p["peak"], 1) for t, p in peaks.items()})
    first_peaks = {t: dict(p) for t, p in peaks.items()}
    physical = {str(t): fp32_peak_gflops(t) for t in settings.threads}
    log.info(
        "physical fp32 peak GFLOP/s: %s (%s at %.2f GHz, %s)",
        {t: None if p["gflops"] is None else round(p["gflops"], 1) for t, p in physical.items()},
        physical[str(settings.threads[0])]["lanes_why"],
        physical[str(settings.threads[0])]["clock_ghz"] or 0.0,
        physical[str(settings.threads[0])]["clock_source"],
    )
    out: dict[str, Any] = {
        "machine": machine_info(),
        "versions": library_versions(),
        "settings": {
            "models": list(settings.models),
            "threads": list(settings.threads),
            "batches": list(settings.batches),
            "seconds_per_cell": settings.seconds,
            "max_reps": settings.max_reps,
            "min_reps": settings.min_reps,
            "timing": (
                "per (threads, batch): one warm-up call of every variant and of a 2048^3 sgemm, then "
                "round robins of one call each; medians. fraction_of_peak = achieved GFLOP/s / the "
                "sgemm GFLOP/s measured in the same round robins (same background load); "
                "fraction_of_best_peak uses the best sgemm of the run (peak_gflops)"
            ),
            "input": "real aligned ORL faces, preprocessed per the model's contract",
        },
        "peak_gflops": peaks,
        "physical_peak_gflops": physical,
        "models": {},
        "checks": [],
    }
    for name in settings.models:
        t0 = time.perf_counter()
        info, variants, contract = _model_variants(name, work, faces, settings)
        x = contract.preprocess(faces.faces[: max(settings.batches)])
        results = []
        for threads in settings.threads:
            for batch in settings.batches:
                # Fixed-batch files run once per thread count, in the smallest batch's group.
                group = [v for v in variants if not v.fixed_batch or batch == min(settings.batches)]
                calls: dict[str, Callable[[], object]] = {}
                batch_of: dict[str, int] = {}
                for v in group:
                    calls[v.engine + "/" + v.label], batch_of[v.engine + "/" + v.label] = make_call(
                        v, x, threads, batch
                    )
                a, b = peak_operands(settings.peak_size)

                def sgemm(a: torch.Tensor = a, b: torch.Tensor = b, threads: int = threads) -> object:
                    torch.set_num_threads(threads)
                    return torch.mm(a, b)

                calls["sgemm"] = sgemm
                times = time_group(calls, settings.seconds, settings.max_reps, settings.min_reps)
                local_peak = 2.0 * settings.peak_size**3 / statistics.median(times.pop("sgemm")) / 1e9
                for v in group:
                    key = v.engine + "/" + v.label
                    sec, run_batch = statistics.median(times[key]), batch_of[key]
                    r = {
                        "engine": v.engine,
                        "variant": v.label,
                        "threads": threads,
                        "batch": run_batch,
                        "requested_batch": batch,
                        "faces_per_s": run_batch / sec,
                        "ms_per_face": sec / run_batch * 1e3,
                        "reps": len(times[key]),
                        "note": v.note,
                    }
                    r["gflops"] = r["faces_per_s"] * info["gflop_per_face"]
                    r["local_peak_gflops"] = local_peak
                    r["fraction_of_peak"] = r["gflops"] / local_peak
                    results.append(r)
                    log.info(
                        "%-16s %-11s %-6s t%d b%-3d %8.2f faces/s %6.1f%% of the sgemm run beside it (%.0f GFLOP/s)",
                        name,
                        v.engine,
                        v.label,
                        threads,
                        run_batch,
                        r["faces_per_s"],
                        100 * r["fraction_of_peak"],
                        local_peak,
                    )
        info["results"] = results
        if settings.int8 and settings.accuracy and name in REAL_MODELS:
            info["int8_accuracy"] = _accuracy(variants, contract, faces)
        info["bench_s"] = round(time.perf_counter() - t0, 1)
        out["models"][name] = info
        for v in variants:
            v.module = None
    # Measured again at the end; the higher figure is the peak (the fractions use it).
    for t in settings.threads:
        again = matmul_peak(t, settings.peak_size)
        peaks[str(t)] = {
            "start": first_peaks[str(t)],
            "end": again,
            "peak": max(first_peaks[str(t)]["peak"], again["peak"]),
        }
    for info in out["models"].values():
        for r in info["results"]:
            r["fraction_of_best_peak"] = r["gflops"] / peaks[str(r["threads"])]["peak"]
            phys = physical[str(r["threads"])]["gflops"]
            # fp32 only: an int8 variant's fp32-equivalent GFLOP/s may exceed the fp32 peak (its own is higher)
            fp32 = r["variant"] != "int8"
            r["fraction_of_physical_peak"] = None if phys is None or not fp32 else r["gflops"] / phys
    out["checks"] = checks(out)
    out["total_s"] = round(time.perf_counter() - t_start, 1)
    return out


def _find(results: list[dict[str, Any]], engine: str, variant: str, threads: int, batch: int) -> dict[str, Any] | None:
    return next(
        (
            r
            for r in results
            if r["engine"] == engine
            and r["variant"] == variant
            and r["threads"] == threads
            and r["requested_batch"] == batch
        ),
        None,
    )


def checks(out: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's performance requirements, each with its measured value and verdict."""
    res: list[dict[str, Any]] = []
    threads = out["settings"]["threads"]
    big = max(out["settings"]["batches"])
    for name, info in out["models"].items():
        rs = info["results"]
        for t in threads:
            fp32 = _find(rs, "onnxruntime", "fp32", t, big)
            int8 = _find(rs, "onnxruntime", "int8", t, big)
            if name in IRESNETS and fp32:
                # Median against median: the sgemm timed in the same round robins. The fraction of
                # the run's single best sgemm (a best case, not a median) is given beside it.
                res.append(
                    {
                        "check": f"{name} onnxruntime fp32 batch {big}, {t} thread(s): >= "
                        f"{MIN_IRESNET_PEAK_FRACTION:.0%} of the fp32 sgemm GFLOP/s measured beside it",
                        "value": fp32["fraction_of_peak"],
                        "value_vs_best_sgemm_of_run": fp32["fraction_of_best_peak"],
                        "value_vs_physical_peak": fp32.get("fraction_of_physical_peak"),
                        "pass": fp32["fraction_of_peak"] >= MIN_IRESNET_PEAK_FRACTION,
                    }
                )
            if fp32 and int8:
                speed = int8["faces_per_s"] / fp32["faces_per_s"]
                res.append(
                    {
                        "check": f"{name} int8 vs fp32 onnxruntime, batch {big}, {t} thread(s): >= "
                        f"{MIN_INT8_SPEEDUP}x faster",
                        "value": speed,
                        "pass": speed >= MIN_INT8_SPEEDUP,
                    }
                )
            naive = next((r for r in rs if r["variant"] == "naive" and r["threads"] == t), None)
            if naive:
                # Same batch as the naive file (its batch is fixed), else our smallest batch.
                ours = next(
                    (
                        r
                        for r in rs
                        if r["engine"] == "onnxruntime"
                        and r["variant"].startswith("fp32")
                        and r["threads"] == t
                        and r["batch"] == naive["batch"]
                    ),
                    None,
                )
                ours = ours or _find(rs, "onnxruntime", "fp32", t, min(out["settings"]["batches"]))
                if ours:
                    ratio = ours["faces_per_s"] / naive["faces_per_s"]
                    res.append(
                        {
                            "check": f"{name} our export vs the naive conversion, both at batch "
                            f"{naive['batch']} (ours {ours['batch']}), {t} thread(s): >= "
                            f"{MIN_OURS_VS_NAIVE}x faces/s",
                            "value": ratio,
                            "pass": ratio >= MIN_OURS_VS_NAIVE,
                        }
                    )
        acc = info.get("int8_accuracy", {}).get("verification")
        if acc:
            drop = None if acc["tar_delta"] is None else -acc["tar_delta"]
            res.append(
                {
                    "check": f"{name} int8 TAR@FAR=1e-3 on ORL within {MAX_INT8_TAR_DROP} of fp32",
                    "value": drop,
                    "pass": drop is not None and drop <= MAX_INT8_TAR_DROP,
                }
            )
    return res


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", default="bench.json", help="where to write the JSON result")
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated model names")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--batches", default="1,32")
    p.add_argument("--seconds", type=float, default=2.0, help="timing budget per cell after the warm-up call")
    p.add_argument("--max-reps", type=int, default=5)
    p.add_argument("--min-reps", type=int, default=3)
    p.add_argument("--no-int8", action="store_true")
    p.add_argument("--no-torch", action="store_true", help="skip torch eager")
    p.add_argument("--workdir", default=None, help="keep the exported files here (default: a temp dir)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = BenchSettings(
        models=[m for m in args.models.split(",") if m],
        threads=[int(t) for t in args.threads.split(",")],
        batches=[int(b) for b in args.batches.split(",")],
        seconds=args.seconds,
        max_reps=args.max_reps,
        min_reps=args.min_reps,
        int8=not args.no_int8,
        torch_eager=not args.no_torch,
    )
    unknown = [m for m in settings.models if m not in (*REAL_MODELS, *IRESNETS)]
    if unknown:
        p.error(f"unknown models {unknown}; known: {[*REAL_MODELS, *IRESNETS]}")
    with tempfile.TemporaryDirectory(prefix="fetoolkit-bench-") as tmp:
        work = Path(args.workdir) if args.workdir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        result = run_bench(settings, work)
    Path(args.out).write_text(json.dumps(result, indent=2, allow_nan=False, default=float) + "\n")
    for c in result["checks"]:
        value = "n/a" if c["value"] is None else f"{c['value']:.3f}"
        log.info("%s %s: %s", "PASS" if c["pass"] else "FAIL", c["check"], value)
    log.info("wrote %s in %.0f s", args.out, result["total_s"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

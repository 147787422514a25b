"""What machine a figure was measured on: CPU model, cores, the ISA flags that move numbers,
the int8 kernel family onnxruntime picks, thread settings, and the physical fp32 peak.

No torch import: ``torch`` is asked for its thread count only if the caller already imported it.

Why the int8 kind matters: onnxruntime's u8s8 integer GEMM/Conv kernels on x86-64 CPUs
*without* VNNI (AVX2 only, e.g. AMD Zen 2/3) multiply uint8 activations by int8 weights with
``vpmaddubsw``, which adds each pair of products into int16 *with saturation*. With full-range
8-bit weights a pair can reach 2 x 255 x 127 = 64770 > 32767, so results clip. VNNI CPUs
(AVX512-VNNI or AVX-VNNI) accumulate in int32 and never clip. With 7-bit weights
(``reduce_range``) a pair is at most 2 x 255 x 64 = 32640: no clipping on either kind.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from fetoolkit.sharing import running_jobs, usable_cores, user_threads

#: ISA flags reported with every figure (``/proc/cpuinfo`` names).
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8", "avx512_bf16")

Int8Kind = Literal["vnni", "avx2", "other"]


@lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, str, frozenset[str], int | None, int | None, float | None]:
    """(model name, vendor, flags, family, model number, cpu MHz) from ``/proc/cpuinfo``."""
    flags: set[str] = set()
    name, vendor, family, model, mhz = platform.processor() or platform.machine(), "", None, None, None
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return name, vendor, frozenset(flags), family, model, mhz
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and name in ("", platform.processor(), platform.machine()):
            name = value
        elif key == "vendor_id" and not vendor:
            vendor = value
        elif key == "flags" and not flags:
            flags = set(value.split())
        elif key == "cpu family" and family is None:
            family = int(value)
        elif key == "model" and model is None and value.isdigit():
            model = int(value)
        elif key == "cpu MHz" and mhz is None:
            mhz = float(value)
    return name, vendor, frozenset(flags), family, model, mhz


def masked_isa() -> str | None:
    """``"avx2"`` when this process runs under fetoolkit's AVX2-only CPUID shim, else None."""
    return os.environ.get("FETOOLKIT_CPUID_MASK") or None


def isa_flags() -> dict[str, bool]:
    """The flags of ``ISA_FLAGS`` as the libraries in this process see them.

    ``/proc/cpuinfo`` shows the hardware; under the AVX2-only shim the AVX-512, VNNI and AMX
    flags are reported False, as CPUID answers them.
    """
    flags = _cpuinfo()[2]
    seen = {f: f in flags for f in ISA_FLAGS}
    if masked_isa() == "avx2":
        seen.update({f: False for f in ISA_FLAGS if f not in ("avx2", "fma")})
    return seen


def int8_kind() -> Int8Kind:
    """Which onnxruntime u8s8 kernels run here: ``vnni`` (int32 accumulation), ``avx2``
    (``vpmaddubsw``: int16 saturation with full-range int8 weights) or ``other`` (not x86-64)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return "other"
    f = isa_flags()
    if f["avx512_vnni"] or f["avx_vnni"]:
        return "vnni"
    return "avx2" if f["avx2"] else "other"


def compute_signature(threads: int | str | None) -> dict[str, Any]:
    """What, beside the inputs and the code, can move the last bit of a float result here:
    the ISA the kernels were picked for, and the thread count (reductions split differently).
    Part of the cache keys, so a cache filled with other settings is never read as this one's."""
    return {"isa": sorted(f for f, on in isa_flags().items() if on), "threads": threads}


def torch_threads() -> int | None:
    """torch's intra-op thread count, or None when torch is not imported (nothing is asked of it)."""
    torch = sys.modules.get("torch")
    return None if torch is None else int(torch.get_num_threads())


@contextmanager
def one_torch_thread() -> Iterator[int]:
    """torch at one intra-op thread inside the block, restored after; yields the count it had
    (when torch is not imported: the user's thread count, else the usable cores).

    Threads that make their first torch call inside the block (a pool started in it) take the
    one-thread setting too: torch gives a new thread the process's count at its first op.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        yield user_threads() or usable_cores()
        return
    before = int(torch.get_num_threads())
    torch.set_num_threads(1)
    try:
        yield before
    finally:
        torch.set_num_threads(before)


def thread_settings(onnxruntime_threads: int | None = None) -> dict[str, Any]:
    """Thread settings that shape speed and the last digits of float results.

    Args:
        onnxruntime_threads: intra-op threads the job gave onnxruntime (None: its default, one
            per core).
    """
    out: dict[str, Any] = {
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "onnxruntime_intra_op": onnxruntime_threads or user_threads() or "default (one per core)",
        "fetoolkit_jobs_running": len(running_jobs()),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        out["torch_intra_op"] = torch.get_num_threads()
    for var in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        if os.environ.get(var):
            out[var] = os.environ[var]
    return out


@lru_cache(maxsize=1)
def _static_machine() -> dict[str, Any]:
    name, vendor, _, family, model, mhz = _cpuinfo()
    return {
        "cpu": name,
        "vendor": vendor,
        "family": family,
        "model": model,
        "logical_cpus": os.cpu_count(),
        "cpu_mhz_reported": mhz,
        "platform": platform.platform(),
    }


def machine_info(onnxruntime_threads: int | None = None) -> dict[str, Any]:
    """Everything a reported figure needs to say where it was measured (JSON-ready)."""
    flags = isa_flags()
    return {
        **_static_machine(),
        "isa": sorted(f for f, on in flags.items() if on),
        "isa_masked": masked_isa(),
        "int8_kernels": int8_kind(),
        "threads": thread_settings(onnxruntime_threads),
    }


def fp32_fma_lanes_per_cycle() -> tuple[int, str]:
    """fp32 fused multiply-adds one core can issue per cycle (FMA units x SIMD lanes), and why.

    From the ISA flags and the vendor/family (the flags alone cannot tell 1 from 2 FMA units):
    Intel with AVX-512: 2 x 16 (Xeon Scalable Gold/Platinum; some Silver/Bronze parts have one
    512-bit unit, which this over-counts, so a fraction of peak is never flattered); Intel or AMD
    Zen 2-4 with AVX2+FMA: 2 x 8 (Zen 4 runs 512-bit ops on its 256-bit units); AMD Zen 5
    (family 26) with AVX-512: 2 x 16; Zen 1 (family 23, model < 0x30): 1 x 8; otherwise 2 x 4
    (SSE).
    """
    f = isa_flags()
    _, vendor, _, family, model, _ = _cpuinfo()
    amd = vendor == "AuthenticAMD"
    if f["avx512f"] and (not amd or (family or 0) >= 26):
        return 32, "2 FMA units x 16 fp32 lanes (AVX-512)"
    if f["fma"] and f["avx2"]:
        if amd and family == 23 and (model or 0) < 0x30:
            return 8, "1 x 8 fp32 lanes (Zen 1: two 128-bit FMA pipes)"
        return 16, "2 FMA units x 8 fp32 lanes (AVX2 + FMA)"
    return 8, "2 units x 4 fp32 lanes (SSE, no FMA)"


def measured_clock_hz(seconds: float = 0.2) -> tuple[float | None, str]:
    """The core clock while busy (dependent-add chain, ``fetoolkit/native/clock.c``), and how it
    was read; falls back to ``/proc/cpuinfo``'s ``cpu MHz`` (nominal under a hypervisor)."""
    try:
        import ctypes

        from fetoolkit.native import NativeUnavailable, build

        try:
            lib = ctypes.CDLL(str(build("clock")))
        except (NativeUnavailable, OSError) as e:
            raise RuntimeError(str(e)) from None
        lib.dep_adds.argtypes = [ctypes.c_uint64]
        lib.dep_adds.restype = ctypes.c_uint64
        n = 1 << 16
        lib.dep_adds(n)  # warm up (and let the clock ramp)
        best = 0.0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            lib.dep_adds(n)
            best = max(best, 64 * n / (time.perf_counter() - t0))
        return best, "measured: chain of dependent integer adds (fetoolkit/native/clock.c), fastest of repeats"
    except RuntimeError as e:
        mhz = _cpuinfo()[5]
        return (mhz * 1e6 if mhz else None), f"/proc/cpuinfo cpu MHz (clock probe unavailable: {e})"


def fp32_peak_gflops(threads: int, clock_hz: float | None = None) -> dict[str, Any]:
    """Physical fp32 peak of ``threads`` cores: lanes x 2 flop (FMA) x clock x threads.

    Returns ``{"gflops", "lanes_per_cycle", "lanes_why", "clock_ghz", "clock_source", "threads"}``;
    ``gflops`` is None when no clock can be read.
    """
    lanes, why = fp32_fma_lanes_per_cycle()
    source = "given"
    if clock_hz is None:
        clock_hz, source = measured_clock_hz()
    gflops = None if clock_hz is None else lanes * 2 * clock_hz * threads / 1e9
    return {
        "gflops": gflops,
        "lanes_per_cycle": lanes,
        "lanes_why": why,
        "clock_ghz": None if clock_hz is None else clock_hz / 1e9,
        "clock_source": source,
        "threads": threads,
    }

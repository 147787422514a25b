"""Machine facts recorded with every figure, the AVX2-only shim, the clock probe and the peak.

Oracles: ``/proc/cpuinfo`` read here independently, a real sgemm (no core can beat its
physical peak), and the shim's own effect on a fresh process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fetoolkit import cpu

CPUINFO = Path("/proc/cpuinfo")
pytestmark = pytest.mark.skipif(not CPUINFO.exists(), reason="needs Linux /proc/cpuinfo")


def _flags() -> set[str]:
    line = next(ln for ln in CPUINFO.read_text().splitlines() if ln.startswith("flags"))
    return set(line.split(":", 1)[1].split())


def test_machine_info_names_the_cpu_flags_and_threads() -> None:
    m = cpu.machine_info(onnxruntime_threads=1)
    json.dumps(m, allow_nan=False)
    model = next(ln for ln in CPUINFO.read_text().splitlines() if ln.startswith("model name")).split(":", 1)[1]
    assert m["cpu"] == model.strip()
    assert m["threads"]["onnxruntime_intra_op"] == 1 and m["threads"]["cpus_usable"] >= 1
    hardware = {f for f in cpu.ISA_FLAGS if f in _flags()}
    if os.environ.get("FETOOLKIT_CPUID_MASK") == "avx2":  # this suite runs under `make test-avx2`
        assert m["isa_masked"] == "avx2" and set(m["isa"]) == hardware & {"avx2", "fma"}
        assert m["int8_kernels"] == "avx2"
        return
    assert set(m["isa"]) == hardware and m["isa_masked"] is None
    want = "vnni" if {"avx512_vnni", "avx_vnni"} & _flags() else "avx2" if "avx2" in _flags() else "other"
    assert m["int8_kernels"] == want


_PROBE = "import json; from fetoolkit import cpu; print(json.dumps(cpu.machine_info()))"


def test_avx2_shim_hides_avx512_vnni_and_amx_from_a_process() -> None:
    from fetoolkit.native import NativeUnavailable, avx2_only_env

    if "avx2" not in _flags():
        pytest.skip("not an AVX2 CPU")
    try:
        env = avx2_only_env()
    except NativeUnavailable as e:
        pytest.skip(f"cannot force AVX2 here: {e}")
    res = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    m = json.loads(res.stdout)
    assert m["isa_masked"] == "avx2" and m["int8_kernels"] == "avx2"
    assert set(m["isa"]) == {"avx2", "fma"} & _flags()
    # The libraries see it too: torch's own CPUID reader reports AVX2 as the best kernel set.
    res = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0 and res.stdout.strip() == "AVX2", (res.stdout, res.stderr[-500:])


def test_physical_peak_bounds_a_real_sgemm() -> None:
    """No core computes faster than lanes x 2 x clock: a numpy sgemm on one thread stays below."""
    from threadpoolctl import threadpool_limits

    peak = cpu.fp32_peak_gflops(1)
    assert peak["clock_source"].startswith("measured"), peak
    assert 0.5 < peak["clock_ghz"] < 7.0, peak
    n = 1024
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    with threadpool_limits(limits=1, user_api="blas"):
        a @ b
        best = min(_timed(lambda: a @ b) for _ in range(5))
    sgemm = 2 * n**3 / best / 1e9
    assert 0 < sgemm < peak["gflops"], (sgemm, peak)


def _timed(fn) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def test_lanes_follow_the_isa(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FETOOLKIT_CPUID_MASK", "avx2")
    if "avx2" in _flags() and "fma" in _flags():
        assert cpu.fp32_fma_lanes_per_cycle()[0] in (8, 16)
        assert cpu.int8_kind() == "avx2"
    assert not any(cpu.isa_flags()[f] for f in ("avx512f", "avx512_vnni", "avx_vnni", "amx_tile"))

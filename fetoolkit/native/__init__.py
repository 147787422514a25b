"""Two tiny C helpers, compiled on first use with the machine's C compiler (no wheel to ship).

* ``clock.c``: a chain of dependent adds that ``fetoolkit.cpu.measured_clock_hz`` times to read
  the core clock the benchmarks actually ran at (turbo included).
* ``cpuid_avx2.c``: an ``LD_PRELOAD`` shim that makes a process see an AVX2-only CPU (no
  AVX-512, no VNNI, no AMX), so the non-VNNI int8 kernels of onnxruntime can be exercised on a
  VNNI machine (``avx2_only_env``).

Built objects are cached under ``$FETOOLKIT_HOME/native/`` keyed by the source's sha256.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from fetoolkit.hub import atomic_path, cache_home

SOURCES = Path(__file__).resolve().parent


class NativeUnavailable(RuntimeError):
    """A helper cannot be built or used here (no C compiler, not x86-64 Linux, ...)."""


def build(name: str) -> Path:
    """The shared object of ``<name>.c``, compiled once (``cc -O2 -shared -fPIC``).

    Raises:
        NativeUnavailable: no C compiler on PATH, or the compiler failed.
    """
    src = SOURCES / f"{name}.c"
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
    out = cache_home() / "native" / f"{name}-{digest}.so"
    if out.is_file():
        return out
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise NativeUnavailable(f"no C compiler on PATH to build {src.name} (install gcc, or set CC)")
    with atomic_path(out) as tmp:
        res = subprocess.run(
            [cc, "-O2", "-shared", "-fPIC", str(src), "-o", str(tmp), "-ldl"], capture_output=True, text=True
        )
        if res.returncode != 0:
            raise NativeUnavailable(f"{cc} failed on {src.name}: {res.stderr.strip()[-500:]}")
    return out


def avx2_only_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment whose processes see an AVX2-only CPU (``LD_PRELOAD`` of ``cpuid_avx2``).

    Checked before it is returned: a probe process must start under it and report the mask.

    Raises:
        NativeUnavailable: not x86-64 Linux, no compiler, or no CPUID faulting here.
    """
    if os.uname().machine != "x86_64" or not Path("/proc/cpuinfo").exists():
        raise NativeUnavailable("the AVX2-only shim needs x86-64 Linux")
    env = dict(os.environ if base is None else base)
    shim = str(build("cpuid_avx2"))
    env["LD_PRELOAD"] = f"{shim} {env['LD_PRELOAD']}" if env.get("LD_PRELOAD") else shim
    probe = subprocess.run(["sh", "-c", 'echo "$FETOOLKIT_CPUID_MASK"'], env=env, capture_output=True, text=True)
    if probe.returncode != 0 or probe.stdout.strip() != "avx2":
        raise NativeUnavailable(f"the AVX2-only shim does not work here: {probe.stderr.strip() or probe.returncode}")
    return env

"""glibc malloc settings for a long-running, many-threaded server.

With the defaults, glibc gives each thread that allocates its own arena (up to 8 per core) and
raises its mmap threshold after every large free, so the buffers of decoded photos end up in
per-thread arenas that never shrink: the server's RSS grows with every distinct thread that once
held a large image. The service caps the arenas (``M_ARENA_MAX``) and fixes both thresholds:

* ``M_MMAP_THRESHOLD`` (32 MiB): blocks at least this large come from ``mmap`` and go back to the
  system on ``free``, so a huge photo never stays in an arena;
* ``M_TRIM_THRESHOLD`` (64 MiB): an arena gives its free top back only when more than this is
  free, so the buffers every request needs again are reused instead of returned and faulted in anew.

Both matter for speed. A full photo allocates tens of MB per request: the decoded pixels (a
3.3 MP photo is 10 MB) and, with onnxruntime's arena off (``onnx_arena``), YuNet's intermediate
tensors at 640 px. With a 1 MiB mmap threshold each of them was a fresh ``mmap`` whose pages the
kernel zeroes and faults in on every request: about 13,300 minor page faults per 3.3 MP photo in
the server, and detection at 33 ms instead of 11 ms (decode 17 ms instead of 11; AMD EPYC, one
thread). With the two thresholds above, 0-5 per request in most windows once warm
(``tests/test_serve.py::test_full_photos_reuse_their_buffers`` counts them).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


def tune_malloc(arena_max: int | None, mmap_threshold: int | None, trim_threshold: int | None = None) -> bool:
    """Apply ``mallopt`` for ``M_ARENA_MAX``, ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` (bytes).

    Call it before the worker threads start. ``None`` leaves a setting alone. Returns False (and
    does nothing) where the C library is not glibc.
    """
    settings = {M_ARENA_MAX: arena_max, M_MMAP_THRESHOLD: mmap_threshold, M_TRIM_THRESHOLD: trim_threshold}
    if not sys.platform.startswith("linux") or all(v is None for v in settings.values()):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        log.info("not glibc: malloc settings left alone")
        return False
    # every setting is applied, even after one is refused
    ok = all([mallopt(param, int(value)) == 1 for param, value in settings.items() if value is not None])
    if not ok:
        log.warning(
            "mallopt refused arena_max=%s mmap_threshold=%s trim_threshold=%s",
            arena_max,
            mmap_threshold,
            trim_threshold,
        )
    return ok

"""glibc malloc settings for a long-running, many-threaded server.

With the defaults, glibc gives each thread that allocates its own arena (up to 8 per core) and
raises its mmap threshold after every large free, so the buffers of decoded photos end up in
per-thread arenas that never shrink: the server's RSS grows with every distinct thread that once
held a large image. Capping the arenas and fixing the mmap threshold (large blocks then always
come from ``mmap`` and go back to the system on ``free``) keeps RSS flat under load.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


def tune_malloc(arena_max: int | None, mmap_threshold: int | None) -> bool:
    """Apply ``mallopt(M_ARENA_MAX, arena_max)`` and ``mallopt(M_MMAP_THRESHOLD, mmap_threshold)``.

    Call it before the worker threads start. ``None`` leaves a setting alone. Returns False (and
    does nothing) where the C library is not glibc.
    """
    if not sys.platform.startswith("linux") or (arena_max is None and mmap_threshold is None):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        log.info("not glibc: malloc settings left alone")
        return False
    ok = True
    if arena_max is not None:
        ok &= mallopt(M_ARENA_MAX, int(arena_max)) == 1
    if mmap_threshold is not None:
        ok &= mallopt(M_MMAP_THRESHOLD, int(mmap_threshold)) == 1
    if not ok:
        log.warning("mallopt refused arena_max=%s mmap_threshold=%s", arena_max, mmap_threshold)
    return bool(ok)

"""One writer per embedding store: an exclusive ``flock`` on ``DIR/.extract.lock``.

An extract takes the lock before it reads or creates the store and keeps it until it ends; a
second extract on the same store fails at once with a :class:`StoreBusy` naming the store and the
holder (pid, host, start time, command, which the holder writes into the lock file). The kernel
releases a ``flock`` when its holder's file is closed, which happens on every exit, ``kill -9``
included, so a killed run never leaves the store locked: the lock file stays (it is never removed,
which would let two writers lock two different files) and its stale text is replaced by the next
holder's. Worker processes (``spawn``-ed) and Ray's do not inherit the descriptor.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fetoolkit.store import LOCK_FILE, StoreError


class StoreBusy(StoreError):
    """Another process holds the store's write lock."""


def _holder(path: Path) -> str:
    """The lock holder's own description, from the lock file."""
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info.get("pid"):
        return "a process that has not yet written its pid"
    cmd = " ".join(info.get("argv") or [])
    return f"pid {info['pid']} on {info.get('host')}, since {info.get('started')}" + (f": {cmd}" if cmd else "")


@contextmanager
def store_lock(root: Path) -> Iterator[Path]:
    """Hold the store's write lock inside the block (the folder is made when missing); yields the lock file.

    Raises:
        StoreBusy: another process holds it.
    """
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreBusy(
                f"store {root} is being written by another extract ({_holder(path)}; lock {path}): two runs "
                "would compute the same shards and overwrite each other's records; wait for it to end (or stop "
                "it), then run this command again: it resumes the store"
            ) from None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "argv": sys.argv,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock


__all__ = ["LOCK_FILE", "StoreBusy", "store_lock"]

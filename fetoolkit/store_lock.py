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

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fetoolkit.locks import LockHeld, describe_holder, flock_exclusive, write_holder
from fetoolkit.store import LOCK_FILE, StoreError


class StoreBusy(StoreError):
    """Another process holds the store's write lock."""


@contextmanager
def store_lock(root: Path) -> Iterator[Path]:
    """Hold the store's write lock inside the block (the folder is made when missing); yields the lock file.

    On a file system without locks (some network mounts) the extract goes on unlocked, with a
    warning (see :func:`fetoolkit.locks.flock_exclusive`).

    Raises:
        StoreBusy: another process holds it.
    """
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            flock_exclusive(fd, path, "a second extract on this store would not be refused; run one at a time")
        except LockHeld:
            raise StoreBusy(
                f"store {root} is being written by another extract ({describe_holder(path)}; lock {path}): two "
                "runs would compute the same shards and overwrite each other's records; wait for it to end (or "
                "stop it), then run this command again: it resumes the store"
            ) from None
        write_holder(fd)
        yield path
    finally:
        os.close(fd)  # releases the lock


__all__ = ["LOCK_FILE", "StoreBusy", "store_lock"]

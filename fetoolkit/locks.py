"""The one exclusive ``flock`` of fetoolkit: a run folder's claim (:mod:`fetoolkit.run_dir`) and an
embedding store's write lock (:mod:`fetoolkit.store_lock`).

:func:`flock_exclusive` takes the lock without waiting: held by another process, it raises
:class:`LockHeld` (the caller names what is locked, the holder and the fix); on a file system
without locks (some NFS / SMB mounts answer ``ENOLCK``, ``EOPNOTSUPP`` or ``ENOSYS``) it logs one
warning saying what is then not protected and goes on unlocked, never a raw ``OSError``. The holder
writes who it is into the lock file (:func:`write_holder`: one JSON line, pid, host, start time and
command), which :func:`describe_holder` reads back for the other process's message.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

#: The ``errno`` of a file system that cannot lock (the lock is skipped, with a warning).
NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)


class LockHeld(Exception):
    """Another process holds the lock."""


def flock_exclusive(fd: int, path: Path, unprotected: str) -> bool:
    """Lock the open file ``fd`` (of ``path``) exclusively, without waiting.

    Args:
        fd: an open descriptor of the lock file.
        path: its path (for the warning).
        unprotected: what goes unprotected when the file system cannot lock (for the warning).

    Returns:
        True: locked; False: the file system has no locks (a warning was logged).

    Raises:
        LockHeld: another process holds it.
        OSError: any other failure of ``flock``.
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise LockHeld(str(path)) from None
    except OSError as e:
        if e.errno not in NO_LOCKS:
            raise
        log.warning("%s: the file system cannot lock (%s): %s", path, e.strerror, unprotected)
        return False
    return True


def write_holder(fd: int) -> None:
    """Replace the lock file's text with this process's description (one JSON line)."""
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": sys.argv,
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)


def describe_holder(path: Path) -> str:
    """The holder's description from the lock file: ``pid N on HOST, since TIME: COMMAND``."""
    try:
        text = path.read_text().strip()
    except OSError:
        text = ""
    try:
        info = json.loads(text or "{}")
    except ValueError:
        return text  # a lock file of an older fetoolkit: its own words
    if not isinstance(info, dict) or not info.get("pid"):
        return "a process that has not yet written its pid"
    cmd = " ".join(str(a) for a in info.get("argv") or [])
    return f"pid {info['pid']} on {info.get('host')}, since {info.get('started')}" + (f": {cmd}" if cmd else "")


__all__ = ["NO_LOCKS", "LockHeld", "describe_holder", "flock_exclusive", "write_holder"]

"""Cores shared politely between fetoolkit jobs running at once on one machine.

Two evals at once on 2 cores, each with torch's default of one OpenMP thread per core, took
91 s of wall time against 35 s for one alone (``make`` measurement in issue 19's note): an idle
OpenMP thread *spins* for a while before it sleeps, and with more threads than cores the
spinners take the cores from the threads with work. Asking OpenMP to sleep at once
(``OMP_WAIT_POLICY=PASSIVE``) brought the pair to 48 s, but made a job alone ~30 % slower. So a
job sleeps-when-idle only when it starts beside another fetoolkit job:

* every job takes a *seat* when it starts (``take_seat``: a file named by its pid in a folder of
  this user's temporary directory, removed when the job ends; seats of dead processes are
  ignored and removed);
* a job that finds another seat taken sets ``OMP_WAIT_POLICY=PASSIVE`` for itself, before torch
  (and its OpenMP runtime) is loaded, unless the user set the variable.

Detection runs one image per thread, and torch embedding one batch per thread, each at one
intra-op thread (``pipeline.crop_images``, ``pipeline.embed_crops``), so neither a crop nor a torch
embedding depends on the thread count: :func:`fair_share` gives a job beside others its share of
the cores for them. onnxruntime embeddings keep their intra-op count (it moves their last bits):
users who want fewer threads say so (``num_threads=``, ``OMP_NUM_THREADS``), and
:func:`user_threads` passes that word on to onnxruntime, which does not read ``OMP_NUM_THREADS``.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

_taken: list[Path] = []


def seats_dir() -> Path:
    """``<tmp>/fetoolkit-jobs-<uid>``: one file per running job of this user."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"fetoolkit-jobs-{uid}"


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs, and (where ``/proc`` tells) runs fetoolkit: a reused pid is not a job."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: not one of this user's jobs
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    try:
        return b"fetoolkit" in cmdline.read_bytes()
    except OSError:
        return not cmdline.parent.parent.is_dir()  # no /proc here: trust the pid


def running_jobs(folder: Path | None = None) -> list[int]:
    """Pids of the fetoolkit jobs running now (this one included once seated); dead seats removed."""
    folder = folder if folder is not None else seats_dir()
    pids = []
    for seat in folder.glob("*.seat") if folder.is_dir() else []:
        try:
            pid = int(seat.stem)
        except ValueError:
            continue
        if _alive(pid):
            pids.append(pid)
        else:
            seat.unlink(missing_ok=True)
    return sorted(pids)


def take_seat(folder: Path | None = None) -> int:
    """Take this process's seat (released at exit); returns how many jobs run now, this one included.

    A folder that cannot be written only costs the politeness: 1 is returned when no other seat
    can be seen.
    """
    folder = folder if folder is not None else seats_dir()
    seat = folder / f"{os.getpid()}.seat"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        seat.touch()
    except OSError as e:
        log.debug("no seat in %s (%s): cores are not shared politely", folder, e)
        return max(1, len(running_jobs(folder)))
    if seat not in _taken:
        _taken.append(seat)
        atexit.register(seat.unlink, missing_ok=True)
    return max(1, len(running_jobs(folder)))


def share_cores(folder: Path | None = None) -> int:
    """Seat this job; beside another one, make OpenMP sleep when idle (see the module docstring).

    Must run before torch is imported to take effect (``fetoolkit.jobs`` calls it first).
    Returns the number of jobs running now.
    """
    n = take_seat(folder)
    if n > 1 and "OMP_WAIT_POLICY" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        log.debug("%d fetoolkit jobs running: OMP_WAIT_POLICY=PASSIVE", n)
    return n


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask, e.g. ``taskset`` or a container's cpuset)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def fair_share(threads: int) -> int:
    """How many of ``threads`` a job should use for work whose result does not depend on the
    count (detection: one image per thread): all of them alone, the cores divided by the jobs
    running beside others (at least one)."""
    jobs = len(running_jobs())
    if jobs <= 1:
        return max(1, threads)
    return max(1, min(threads, usable_cores() // jobs))


def running_as_job() -> bool:
    """Whether this process was started as a fetoolkit job (``python -m fetoolkit.X`` or
    ``python -m fetoolkit.jobs.X``), not a library user or a test runner that imports a job."""
    main = sys.modules.get("__main__")
    spec_name = getattr(getattr(main, "__spec__", None), "name", None) or ""
    # While ``python -m`` imports the parent packages of its module, sys.argv[0] is "-m".
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return sys.argv[:1] == ["-m"] or spec_name.startswith("fetoolkit.") or script == "fetoolkit"


def user_threads() -> int | None:
    """The thread count the user asked for by the environment or CPU affinity, else None.

    ``OMP_NUM_THREADS`` (a positive integer) wins; else the number of CPUs this process may
    run on when ``taskset``/cgroups restrict it to fewer than the machine has. onnxruntime is
    given this when the job names no ``num_threads``; None leaves its default (one per core).
    """
    raw = os.environ.get("OMP_NUM_THREADS", "").strip()
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    if hasattr(os, "sched_getaffinity"):
        usable = len(os.sched_getaffinity(0))
        if usable < (os.cpu_count() or usable):
            return usable
    return None

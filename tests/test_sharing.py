"""Cores shared between concurrent jobs: seats, the wait policy beside another job, the user's threads.

Oracles: real processes (a live fetoolkit process, a dead one, a live process that is not
fetoolkit), and the environment a freshly started job process ends up with.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fetoolkit.sharing import running_jobs, take_seat, user_threads

HOLDER = "import time; from fetoolkit.sharing import take_seat as t; t(); print('seated', flush=True); time.sleep(30)"
PROBE = (
    "import os; from fetoolkit.sharing import share_cores; n = share_cores(); "
    "print(n, os.environ.get('OMP_WAIT_POLICY', '-'))"
)


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    return {**env, "TMPDIR": str(tmp), **extra}


@pytest.fixture
def holder(tmp_path: Path):
    """A live fetoolkit process holding a seat in ``tmp_path``'s seats folder."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER], env=_env(tmp_path), stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "seated"
    yield proc
    proc.kill()
    proc.wait()


def _probe(tmp: Path, **extra: str) -> tuple[int, str]:
    out = subprocess.run([sys.executable, "-c", PROBE], env=_env(tmp, **extra), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    n, policy = out.stdout.split()
    return int(n), policy


def test_alone_a_job_keeps_spinning_beside_another_it_sleeps(tmp_path: Path, holder) -> None:
    (tmp_path / "empty").mkdir()  # (a TMPDIR that does not exist falls back to /tmp, where real jobs sit)
    assert _probe(tmp_path / "empty") == (1, "-")  # no other job: OpenMP's default (fastest alone)
    assert _probe(tmp_path) == (2, "PASSIVE")
    assert _probe(tmp_path, OMP_WAIT_POLICY="ACTIVE") == (2, "ACTIVE")  # the user's word wins
    holder.kill()
    holder.wait()
    assert _probe(tmp_path) == (1, "-")  # a killed job's seat no longer counts


def test_dead_and_foreign_pids_are_not_jobs(tmp_path: Path) -> None:
    folder = tmp_path / "seats"
    folder.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    foreign = subprocess.Popen(["sleep", "30"])  # alive, but not fetoolkit (a reused pid)
    try:
        for pid in (dead.pid, foreign.pid):
            (folder / f"{pid}.seat").touch()
        (folder / "junk.seat").touch()
        assert running_jobs(folder) == []
        assert not (folder / f"{dead.pid}.seat").exists()  # swept
        assert take_seat(folder) == 1 and running_jobs(folder) == [os.getpid()]
    finally:
        foreign.kill()
        foreign.wait()


def test_a_job_run_from_the_command_line_leaves_no_seat(tmp_path: Path, holder) -> None:
    """``python -m fetoolkit.cache verify`` seats itself (it is a job) and its seat goes with it."""
    env = _env(tmp_path, FETOOLKIT_HOME=str(tmp_path / "home"))
    seats = next(tmp_path.glob("fetoolkit-jobs-*"))
    before = set(seats.iterdir())
    done = subprocess.run([sys.executable, "-m", "fetoolkit.cache", "verify"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    time.sleep(0.1)
    assert set(seats.iterdir()) == before and len(before) == 1


def test_user_threads_follow_omp_num_threads_and_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert user_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "zero")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert user_threads() == 1  # taskset to one CPU of four
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert user_threads() is None  # the whole machine: onnxruntime's own default


def test_detection_threads_are_shared_out_beside_another_job(tmp_path: Path, holder) -> None:
    """Work whose result does not depend on the thread count (detection, one image per thread)
    takes the cores divided by the jobs running: all of them alone, half beside one other job."""
    probe = "import os; from fetoolkit.sharing import fair_share as f, take_seat; take_seat(); print(f(os.cpu_count()))"
    cores = os.cpu_count() or 1
    (tmp_path / "empty").mkdir()
    for tmp, jobs in ((tmp_path / "empty", 1), (tmp_path, 2)):
        out = subprocess.run([sys.executable, "-c", probe], env=_env(tmp), capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert int(out.stdout) == max(1, cores // jobs), (jobs, out.stdout)

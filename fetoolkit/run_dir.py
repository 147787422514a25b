"""Run folders that cannot mix: one run at a time in a folder, never into a folder holding another run's files.

A run folder (``hydra.run.dir``, or the ``out_dir`` of :func:`fetoolkit.eval_run.run`) is *claimed*
(:func:`claim`) before the run computes anything, and held until it has written its files:

* **in use**: the claim is an exclusive lock (``flock``) on ``.fetoolkit-run.lock`` in the folder,
  released when the run ends or its process dies (a killed run leaves no lock that holds). A
  second run given the same folder while the first runs is refused, naming the folder and the
  process holding it: two evals with one ``hydra.run.dir`` can never both exit 0 with one
  silently replacing the other.
* **reused**: a folder that already holds files -- the ``results.json`` of a finished run, the pair
  table, plots, ``profile.json`` or reports of an earlier (maybe unfinished) run, anything but the
  job's own log (``*.log``) and hidden entries (Hydra's ``.hydra/``) -- is **refused**, naming the
  files, never emptied: an earlier run's files are never replaced or deleted silently, and a stale
  plot, pair table or profile can never sit beside a new ``results.json``. The fix: another
  ``hydra.run.dir`` (the default is a fresh timestamped folder) or deleting the folder.
* **staging**: a run's files are written into a hidden sibling ``.<folder>.writing-XXXX``
  (:func:`staging_dir`, on the same file system) and renamed in, so a run killed while writing
  leaves nothing inside any folder readers scan; a claim removes the stale staging folders of its
  own folder (they belong to a run that died, since the lock is ours).

The eval job claims the folder before Hydra writes its ``.hydra/`` record into it
(:class:`RunFolderCallback`, registered in ``configs/eval.yaml``), so a refused run does not
overwrite the record of the run already there.
"""

from __future__ import annotations

import atexit
import glob
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from fetoolkit.locks import LockHeld, describe_holder, flock_exclusive, write_holder

log = logging.getLogger(__name__)

__all__ = ["LOCK_FILE", "RunFolderCallback", "RunFolderError", "claim", "earlier_files", "staging_dir"]

LOCK_FILE = ".fetoolkit-run.lock"


class RunFolderError(ValueError):
    """A run folder that cannot be used: in use by another run, holding an earlier run's files, or not writable."""


class _Lock:
    """One held claim: the locked file descriptor and how many nested claims use it."""

    def __init__(self, folder: Path, fd: int) -> None:
        self.folder, self.fd, self.depth = folder, fd, 1

    def release(self) -> None:
        try:  # removed while still locked: a waiting opener re-checks the file it locked (see _lock)
            (self.folder / LOCK_FILE).unlink(missing_ok=True)
        except OSError:
            pass
        os.close(self.fd)


_held: dict[tuple[Path, int], _Lock] = {}  # (folder, thread id) -> its claim: nested claims of one run are one
_held_guard = threading.Lock()


def _key(folder: Path) -> tuple[Path, int]:
    return folder, threading.get_ident()


def _lock(folder: Path) -> int:
    """Open and lock ``folder/LOCK_FILE``; the locked descriptor."""
    path = folder / LOCK_FILE
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunFolderError(
                f"cannot write in the run folder {folder} ({e.strerror}): give a writable hydra.run.dir"
            ) from None
        try:
            flock_exclusive(fd, path, "a second run given this folder would not be refused")
        except LockHeld:
            os.close(fd)
            raise RunFolderError(
                f"{folder} is in use by another run ({describe_holder(path) or 'another process'}): two runs in "
                "one folder would replace each other's files; give this one another hydra.run.dir"
            ) from None
        except OSError:
            os.close(fd)
            raise
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the run before us removed the file between our open and our lock: lock the new one
    write_holder(fd)
    return fd


def earlier_files(folder: Path) -> list[str]:
    """The entries of ``folder`` that are not this run's: everything but hidden entries and ``*.log``."""
    try:
        entries = list(folder.iterdir())
    except FileNotFoundError:
        return []
    return sorted(p.name for p in entries if not p.name.startswith(".") and p.suffix != ".log")


def _remove_stale_stages(folder: Path) -> None:
    stale = glob.glob(os.path.join(glob.escape(str(folder.parent)), f".{glob.escape(folder.name)}.writing-*"))
    stale += glob.glob(os.path.join(glob.escape(str(folder)), ".writing-*"))  # fetoolkit <= round 2 staged inside
    for s in stale:
        log.info("removing %s: the staging folder of an earlier run here that did not finish", s)
        shutil.rmtree(s, ignore_errors=True)


@contextmanager
def claim(out_dir: str | Path) -> Iterator[Path]:
    """Hold ``out_dir`` for one run (created if missing) for the ``with`` block; yields it.

    Nested claims of one folder in one thread (the eval job's callback, then ``run``, then the
    writer) are one claim.

    Raises:
        RunFolderError: the folder is in use by another run, holds files of an earlier run (named),
            or cannot be created or written; the message says the fix.
    """
    folder = Path(os.path.abspath(out_dir))  # as Hydra names it (no ``..``): one folder, one key
    key = _key(folder)
    with _held_guard:
        held = _held.get(key)
        if held is not None:
            held.depth += 1
    if held is None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunFolderError(
                f"cannot create the run folder {folder} ({e.strerror}): give another hydra.run.dir"
            ) from None
        held = _Lock(folder, _lock(folder))
        with _held_guard:
            _held[key] = held
    try:
        # only the outermost claim looks: an inner one (the job's, then write_staged's) sees this run's own files
        found = earlier_files(folder) if held.depth == 1 else []
        if found:
            # results.json: fetoolkit.results.RESULTS_FILE (that module imports this one, not the reverse)
            what = "an earlier run (results.json)" if "results.json" in found else "files of an earlier run"
            shown = ", ".join(found[:8]) + (f" and {len(found) - 8} more" if len(found) > 8 else "")
            raise RunFolderError(
                f"{folder} already holds {what}: {shown}; a run never writes beside or over another's files: "
                "give another hydra.run.dir (the default is a fresh folder), or delete that folder first"
            )
        if held.depth == 1:
            _remove_stale_stages(folder)
        yield folder
    finally:
        with _held_guard:
            held.depth -= 1
            if held.depth == 0:
                del _held[key]
                held.release()


def staging_dir(folder: Path) -> Path:
    """A new hidden staging folder beside ``folder`` (same file system), or inside it when its parent is
    not writable; what is written there is renamed into ``folder`` (see :func:`fetoolkit.results.write_staged`)."""
    try:
        return Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.writing-"))
    except OSError:
        return Path(tempfile.mkdtemp(dir=folder, prefix=".writing-"))


class RunFolderCallback(Callback):
    """Hydra callback: claim ``hydra.run.dir`` before Hydra writes into it (see :func:`claim`); a
    refused folder ends the job with one line and exit 2, leaving the folder as it was."""

    def __init__(self) -> None:
        self._claim: Any = None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from fetoolkit.cli_args import user_error_exit

        cm = claim(Path(str(config.hydra.run.dir)))
        try:
            cm.__enter__()
        except RunFolderError as e:
            user_error_exit(e)
        self._claim = cm
        atexit.register(self._release)  # a job that ends with sys.exit skips on_run_end

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._release()

    def _release(self) -> None:
        cm, self._claim = self._claim, None
        if cm is not None:
            cm.__exit__(None, None, None)

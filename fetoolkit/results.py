"""The results contract: how an eval run's ``results.json`` is written and read.

``results.json`` is the serialisation of the eval job's summary (see ``fetoolkit.evaluate`` for
its keys), strict JSON (non-finite floats as ``null``, via ``jsonutil.jsonable``), with:

* ``schema_version``: :data:`SCHEMA_VERSION`, bumped when a key changes meaning or goes away
  (added keys keep the version);
* ``complete``: ``true``, written last by ``eval_run.write_reports``, after the pair table and
  the plots: a run without it did not finish.

Every reader of a run (``compare``, the gate, the notebook, ``threshold.dev=``, ``dataset=scores``
given a run folder or its pair table, the one-call ``load_run``) goes through :func:`load_results`,
which refuses, naming the file, what is unreadable, unfinished or written by a newer schema.

A run's files are written by :func:`write_staged`: into a staging folder outside the run folder,
renamed in when all of them were written, ``results.json`` last; the run folder is held by the
run (:func:`fetoolkit.run_dir.claim`: never two runs in one folder, never a run beside an earlier
run's files). A write that fails raises :class:`WriteError`, naming the file.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fetoolkit.jsonutil import jsonable

__all__ = [
    "RESULTS_FILE",
    "SCHEMA_VERSION",
    "ResultsError",
    "StagePath",
    "WriteError",
    "dumps",
    "incomplete_reason",
    "load_results",
    "write_staged",
    "written_file",
]

RESULTS_FILE = "results.json"
_STAGED_RESULTS = ".results.json.staged"  # its name until the final rename: a leftover stage holds no results.json
#: 1: the first versioned schema (the keys of fetoolkit 0.1's summary, ``complete: true``).
#: 2: ``stats.method`` is the method's name (``subject`` | ``pair``, described by ``stats.method_note``;
#: it was the description); new: ``thresholds``, ``interval_rule``, ``comparison``, ``identification``.
SCHEMA_VERSION = 2


class ResultsError(ValueError):
    """A ``results.json`` that cannot be used: unreadable, unfinished, or of a newer schema."""


class WriteError(OSError):
    """A report that could not be written (a full disk, a file-size limit, a read-only folder).

    Attributes:
        path: the file that was being written.
    """

    def __init__(self, path: Path, cause: OSError, note: str = "") -> None:
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.path = path
        self.message = f"could not write {path}: {cause.strerror or cause}{note}"

    def __str__(self) -> str:
        return self.message


class StagePath(type(Path())):  # type: ignore[misc]
    """A staging folder handed to a writer: ``stage / name`` is the plain path to write, and ``stage``
    remembers ``name`` as the file being written, so a write that fails is named even where the
    error does not say which file (a full disk or a file-size limit raise from ``write()``)."""

    last: str | None = None

    def __truediv__(self, key: str | os.PathLike[str]) -> Path:
        self.last = os.fspath(key)
        return Path(self) / key


def written_file(e: OSError, stage: Path, dest: Path) -> Path:
    """The file a writer into ``stage`` was writing when ``e`` was raised, named as in ``dest``.

    ``e.filename`` when the error names one; else the name the writer joined last to ``stage`` (a
    :class:`StagePath`); else the file written last; else ``dest``.
    """
    if e.filename:
        f = Path(os.fsdecode(e.filename))
        return dest / f.name if f.parent == Path(stage) else f
    name = getattr(stage, "last", None)
    if name is None:
        try:
            files = [(p.stat().st_mtime_ns, p.name) for p in Path(stage).iterdir()]
        except OSError:
            files = []
        if not files:
            return dest
        name = max(files)[1]
    return dest / (RESULTS_FILE if name == _STAGED_RESULTS else name)


def dumps(summary: dict[str, Any]) -> str:
    """``summary`` as strict JSON text, stamped with :data:`SCHEMA_VERSION` (``summary`` is updated)."""
    summary["schema_version"] = SCHEMA_VERSION
    return json.dumps(jsonable(summary), indent=2, allow_nan=False) + "\n"


def _path(run: str | Path) -> Path:
    p = Path(run)
    return p / RESULTS_FILE if p.is_dir() else p


def load_results(run: str | Path) -> dict[str, Any]:
    """The summary of a finished run.

    Args:
        run: a run folder or its ``results.json``.

    Raises:
        ResultsError: the file is missing or not JSON, has no ``"complete": true``, or a
            ``schema_version`` newer than this code reads; the message names the file.
    """
    path = _path(run)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such file; run `python -m fetoolkit.eval` first") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ResultsError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(data, dict) or data.get("complete") is not True:
        raise ResultsError(f'{path}: no "complete": true (the run did not finish, or an older fetoolkit wrote it)')
    version = data.get("schema_version", 0)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ResultsError(
            f"{path}: schema_version {version!r}, this fetoolkit reads up to {SCHEMA_VERSION}: upgrade fetoolkit"
        )
    return data


def incomplete_reason(run: str | Path) -> str | None:
    """Why ``run`` (a folder or its ``results.json``) is not a usable finished run, or None."""
    try:
        load_results(run)
    except ResultsError as e:
        return str(e).split(": ", 1)[1]
    return None


def write_staged(out_dir: Path, summary: dict[str, Any], write_files: Callable[[Path], None]) -> None:
    """Write a run's files whole: ``write_files(stage)`` then ``results.json``, renamed into ``out_dir``.

    Everything is written into a hidden staging folder beside ``out_dir``
    (:func:`fetoolkit.run_dir.staging_dir`: outside the folders ``compare`` scans, and with
    ``results.json`` under another name until its final rename) and renamed into place only when
    all of it succeeded, ``results.json`` last and with ``"complete": true`` (which every reader
    requires): a run that died halfway (a full disk, a kill) leaves no ``results.json`` that looks
    finished, and no half-written file under its final name. ``out_dir`` is claimed for the write
    (:func:`fetoolkit.run_dir.claim`): it must hold no other run's files.

    Raises:
        WriteError: a file could not be written or renamed in; it names the file, and nothing of
            this run is left in ``out_dir``.
        fetoolkit.run_dir.RunFolderError: ``out_dir`` is in use or holds an earlier run's files.
    """
    from fetoolkit.run_dir import claim, staging_dir

    note = f" (nothing of this run was kept in {out_dir})"
    with claim(out_dir) as folder:
        stage = StagePath(staging_dir(folder))
        moved: list[Path] = []
        try:
            try:
                write_files(stage)
                summary["complete"] = True
                (stage / _STAGED_RESULTS).write_text(dumps(summary))
            except OSError as e:
                raise WriteError(written_file(e, stage, folder), e, note) from e
            # summary.md first: a pairs.parquet beside it is known as a run's table (fetoolkit.data.scores'
            # finished-run check) even when a kill stops the renames halfway; results.json last
            names = sorted(
                (p.name for p in stage.iterdir() if p.name != _STAGED_RESULTS), key=lambda n: (n != "summary.md", n)
            )
            try:
                for name in [*names, _STAGED_RESULTS]:  # results.json last
                    dest = folder / (RESULTS_FILE if name == _STAGED_RESULTS else name)
                    os.replace(stage / name, dest)
                    moved.append(dest)
            except OSError as e:
                for m in moved:  # the folder held none of these before (claim): leave it as it was
                    if m.is_dir():
                        shutil.rmtree(m, ignore_errors=True)
                    else:
                        m.unlink(missing_ok=True)
                raise WriteError(folder / Path(os.fsdecode(e.filename2 or e.filename or "")).name, e, note) from e
        finally:
            shutil.rmtree(stage, ignore_errors=True)

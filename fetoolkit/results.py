"""The results contract: how an eval run's ``results.json`` is written and read.

``results.json`` is the serialisation of the eval job's summary (see ``fetoolkit.evaluate`` for
its keys), strict JSON (non-finite floats as ``null``, via ``jsonutil.jsonable``), with:

* ``schema_version``: :data:`SCHEMA_VERSION`, bumped when a key changes meaning or goes away
  (added keys keep the version);
* ``complete``: ``true``, written last by ``eval_run.write_reports``, after the pair table and
  the plots: a run without it did not finish.

Every reader (``compare``, the gate, the notebook) goes through :func:`load_results`, which
refuses, naming the file, what is unreadable, unfinished or written by a newer schema.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fetoolkit.jsonutil import jsonable

__all__ = [
    "RESULTS_FILE",
    "SCHEMA_VERSION",
    "ResultsError",
    "dumps",
    "incomplete_reason",
    "load_results",
    "write_staged",
]

RESULTS_FILE = "results.json"
#: 1: the first versioned schema (the keys of fetoolkit 0.1's summary, ``complete: true``).
#: 2: ``stats.method`` is the method's name (``subject`` | ``pair``, described by ``stats.method_note``;
#: it was the description); new: ``thresholds``, ``interval_rule``, ``comparison``, ``identification``.
SCHEMA_VERSION = 2


class ResultsError(ValueError):
    """A ``results.json`` that cannot be used: unreadable, unfinished, or of a newer schema."""


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

    Everything is written into a staging folder inside ``out_dir`` and renamed into place only
    when all of it succeeded, ``results.json`` last and with ``"complete": true`` (which
    ``compare`` and the gate require): a run that died halfway (a full disk, a kill) leaves no
    ``results.json`` that looks finished, and no half-written file under its final name.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out_dir, prefix=".writing-"))
    try:
        write_files(stage)
        summary["complete"] = True
        (stage / RESULTS_FILE).write_text(dumps(summary))
        for f in sorted(stage.iterdir(), key=lambda p: p.name == RESULTS_FILE):  # results.json last
            os.replace(f, out_dir / f.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)

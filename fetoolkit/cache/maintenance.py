"""What ``python -m fetoolkit.cache verify|prune|clear`` does: check, tidy and empty the cache.

Under ``cache_home()`` (``$FETOOLKIT_HOME`` or ``~/.cache/fetoolkit``) two kinds of file are
checked:

* embedding-cache entries (``embeddings/crops``, ``embeddings/emb``): each must be readable,
  of this code's format, hold the key it is named after and match its own checksum;
* derived files (``converted/*.safetensors``, ``onnx/*.onnx``, ``mtcnn/*.onnx``): each must
  match its sidecar's size and sha256 (``fetoolkit.hub.record_derived``).

``prune`` removes what failed (the next run recomputes or rebuilds it), sidecars whose file is
gone, and temporary ``.part`` files of killed writers older than a day; ``older_than_days``
also removes entries not written for that long. Fetched weights and data sets are sources, not
derived: they are checked on every fetch and never touched here.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fetoolkit.cache import OLD_FORMAT, default_cache_dir, read_entry
from fetoolkit.hub import STALE_PART_S, cache_home, matches_sidecar, read_sidecar, sidecar_of

log = logging.getLogger(__name__)

#: Folders of ``cache_home()`` holding derived files, and the suffix of those files.
DERIVED = {"converted": ".safetensors", "onnx": ".onnx", "mtcnn": ".onnx"}
#: A derived file younger than this (seconds) may still be waiting for its sidecar: never pruned.
WRITING_S = 60.0
#: Folders of the embedding cache.
ENTRY_KINDS = ("crops", "emb")


@dataclass(frozen=True)
class Finding:
    """One file looked at.

    Attributes:
        path: the file.
        kind: ``entry``, ``derived``, ``sidecar`` or ``part``.
        problem: what is wrong, or None when the file is good.
        size: bytes on disk.
        age_s: seconds since it was last written.
        damaged: the problem is damage (a checksum, key, size or sha256 that disagrees, an
            unreadable file), not age (an old format, a file from before sidecars, an orphan).
    """

    path: Path
    kind: str
    problem: str | None
    size: int
    age_s: float
    damaged: bool = False


def _stat(path: Path) -> tuple[int, float]:
    st = path.stat()
    return st.st_size, time.time() - st.st_mtime


def _check_derived(path: Path) -> tuple[str | None, bool]:
    """``(problem, damaged)`` of a derived file against its sidecar."""
    side = sidecar_of(path).name
    try:
        info = read_sidecar(path)
    except ValueError as e:
        return f"has an {e}", True
    if info is None:
        return f"has no sidecar {side} (made before sidecars, or its writer was killed)", False
    if not matches_sidecar(path, info):
        return f"differs from its sidecar {side} (damaged or replaced)", True
    return None, False


def scan(home: Path | None = None, embeddings: Path | None = None) -> Iterator[Finding]:
    """Every cache file under ``home`` (default ``cache_home()``) and the embedding cache
    ``embeddings`` (default ``default_cache_dir()``), checked."""
    home = home if home is not None else cache_home()
    embeddings = embeddings if embeddings is not None else default_cache_dir()
    for kind in ENTRY_KINDS:
        folder = embeddings / kind
        for path in sorted(folder.glob("*.npz")) if folder.is_dir() else []:
            _, problem = read_entry(path, path.stem)
            damaged = problem is not None and not problem.startswith(OLD_FORMAT)
            yield Finding(path, "entry", problem, *_stat(path), damaged=damaged)
    for sub, suffix in DERIVED.items():
        folder = home / sub
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob(f"*{suffix}")):
            problem, damaged = _check_derived(path)
            yield Finding(path, "derived", problem, *_stat(path), damaged=damaged)
        for side in sorted(folder.glob("*.sha256.json")):
            made = side.with_name(side.name[: -len(".sha256.json")])
            if not made.is_file():
                yield Finding(side, "sidecar", f"its file {made.name} is gone", *_stat(side))
    for folder in [*(embeddings / k for k in ENTRY_KINDS), *(home / s for s in DERIVED)]:
        for part in sorted(folder.glob(".*.part")) if folder.is_dir() else []:
            size, age = _stat(part)
            stale = age > STALE_PART_S
            yield Finding(part, "part", "left by a killed writer" if stale else None, size, age)


def prune(findings: list[Finding], older_than_days: float | None = None) -> list[Finding]:
    """Remove every finding with a problem, and (``older_than_days``) entries older than that.

    A young ``.part`` file may belong to a writer still running and is kept, and so is a derived
    file written less than ``WRITING_S`` ago (its writer renames it into place, then writes its
    sidecar). Returns what was removed.
    """
    removed = []
    for f in findings:
        old = older_than_days is not None and f.kind == "entry" and f.age_s > older_than_days * 86400
        if f.problem is None and not old:
            continue
        if f.kind == "derived" and f.age_s < WRITING_S:  # maybe renamed into place, its sidecar not yet written
            continue
        try:
            f.path.unlink()
        except FileNotFoundError:
            continue
        if f.kind == "derived":
            sidecar_of(f.path).unlink(missing_ok=True)
        removed.append(f)
    return removed


def clear(home: Path | None = None, embeddings: Path | None = None, *, derived: bool = False) -> list[Path]:
    """Remove the embedding cache (and with ``derived`` the converted weights and ONNX exports).

    Returns the folders removed. Everything removed is rebuilt by the next run that needs it.
    """
    home = home if home is not None else cache_home()
    embeddings = embeddings if embeddings is not None else default_cache_dir()
    folders = [embeddings / k for k in ENTRY_KINDS] + ([home / s for s in DERIVED] if derived else [])
    gone = []
    for folder in folders:
        if folder.is_dir():
            shutil.rmtree(folder)
            gone.append(folder)
    return gone

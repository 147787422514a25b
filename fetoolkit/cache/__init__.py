"""On-disk cache of aligned crops and embeddings, keyed by everything that shapes them.

Two levels, both under ``fetoolkit.hub.cache_home() / "embeddings"`` (override: ``cache.dir``):

* ``crops/<key>.npz`` -- aligned crops + detection details of a data set. The key holds the
  images' content (sha256 of every image's bytes, in order), whether they arrive aligned, the
  pipeline settings that change crops (``align``, ``select``), the detector settings, the crop
  size, the alignment template and the versions of the libraries that decode, detect and warp.
  A sweep over models and backends therefore detects each data set once.
* ``emb/<key>.npz`` -- raw (pre-normalisation) embeddings, and those of the mirrored crops when
  asked for. The key adds the weights' sha256, the model name, the backend, the full input
  contract, ``swap_rb``, whether mirrored embeddings are included and the backend's library
  version (torch and onnxruntime outputs differ slightly).

Entries are written to a temporary file in the same folder and renamed into place, so a reader
sees a complete file or none. Unreadable entries are logged and recomputed. Entries are plain
``.npz`` files read with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fetoolkit.hub import atomic_path, cache_home

log = logging.getLogger(__name__)

#: Bump when the content or meaning of an entry changes (2: entries carry their key and a checksum).
CACHE_VERSION = 2
#: How ``read_entry`` starts the problem of an entry written by an older version.
OLD_FORMAT = "has an old format"


def arrays_checksum(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over every array's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def default_cache_dir() -> Path:
    """``cache_home() / "embeddings"``."""
    return cache_home() / "embeddings"


def digest(obj: Any) -> str:
    """sha256 hex of a JSON-serialisable object (keys sorted)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def content_digest(paths: Sequence[Path], images: Sequence[bytes] | None = None) -> str:
    """sha256 over the sha256 of every image's bytes, in order.

    A missing or unreadable file contributes its error (so adding the file later changes the key).
    """
    h = hashlib.sha256()
    if images is not None:
        for blob in images:
            h.update(hashlib.sha256(blob).digest())
        return h.hexdigest()
    for p in paths:
        try:
            h.update(hashlib.sha256(Path(p).read_bytes()).digest())
        except OSError as e:
            h.update(f"missing:{type(e).__name__}".encode())
    return h.hexdigest()


def read_entry(path: Path, key: str) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """Read one entry file: ``(arrays, None)`` when it is whole and is the entry of ``key``,
    else ``(None, what is wrong)`` (old format, another key, checksum, unreadable)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        return None, f"is unreadable ({e})"
    if int(out.get("_version", -1)) != CACHE_VERSION:
        return None, f"{OLD_FORMAT} (version {int(out.get('_version', -1))}, this code writes {CACHE_VERSION})"
    stored_key = bytes(out.pop("_key", np.zeros(0, np.uint8))).decode(errors="replace")
    stored_sum = bytes(out.pop("_checksum", np.zeros(0, np.uint8))).decode(errors="replace")
    if stored_key != key:
        return None, "holds another key (moved or renamed)"
    if stored_sum != arrays_checksum({k: v for k, v in out.items() if k != "_version"}):
        return None, "does not match its checksum (damaged)"
    return out, None


class EmbeddingCache:
    """Reads and writes cache entries (see the module docstring).

    Args:
        root: cache folder; :func:`default_cache_dir` when None.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.writable = True  # False after a failed write: the run goes on without caching

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{key}.npz"

    def load(self, kind: str, key: str) -> dict[str, np.ndarray] | None:
        """The arrays of an entry, or None when absent or unreadable (logged)."""
        p = self.path(kind, key)
        if not p.is_file():
            return None
        arrays, problem = read_entry(p, key)
        if problem is not None:
            log.warning("cache entry %s %s; recomputing", p, problem)
        return arrays

    def save(self, kind: str, key: str, arrays: dict[str, np.ndarray]) -> Path | None:
        """Write an entry atomically (temporary file + rename), with its key and a checksum of its arrays.

        A cache is optional: when it cannot be written (read-only folder, full disk) one warning
        is logged, caching stops for this run and None is returned; the results are unaffected.
        """
        if not self.writable:
            return None
        p = self.path(kind, key)
        tags = {
            "_version": np.int64(CACHE_VERSION),
            "_key": np.frombuffer(key.encode(), np.uint8),
            "_checksum": np.frombuffer(arrays_checksum(arrays).encode(), np.uint8),
        }
        try:
            with atomic_path(p) as tmp, open(tmp, "wb") as f:
                np.savez(f, **tags, **arrays)
        except OSError as e:
            self.writable = False
            log.warning("cache folder %s cannot be written (%s): the run continues without caching", self.root, e)
            return None
        return p


@dataclass(frozen=True)
class CacheCfg:
    """Cache settings (``cache`` in ``configs/eval.yaml``).

    Attributes:
        enabled: use the cache at all.
        dir: cache folder (None: :func:`default_cache_dir`).
        crops: also cache aligned crops (about 37 KB per image), shared across models.
    """

    enabled: bool = True
    dir: str | None = None
    crops: bool = True

    def open(self) -> EmbeddingCache | None:
        return EmbeddingCache(self.dir) if self.enabled else None


def encode_failures(failures: dict[int, str], paths: Sequence[Path]) -> dict[str, np.ndarray]:
    """Failures as arrays (paths replaced by a placeholder, so equal content at another path reads right)."""
    idx = np.asarray(sorted(failures), np.int64)
    msgs = [failures[i].replace(str(paths[i]), "<image>") for i in idx]
    return {"fail_idx": idx, "fail_msg": np.asarray(msgs, dtype=np.str_) if msgs else np.zeros(0, "<U1")}


def decode_failures(arrays: dict[str, np.ndarray], paths: Sequence[Path]) -> dict[int, str]:
    """Inverse of :func:`encode_failures`."""
    return {
        int(i): str(m).replace("<image>", str(paths[int(i)])) for i, m in zip(arrays["fail_idx"], arrays["fail_msg"])
    }

"""What an embedding store's reader checks before it believes a shard or the store's identity.

A shard file is believed only when it has the size and the sha256 its manifest record holds,
decodes as Parquet (a damaged zstd page is a problem, not a traceback), has the store's columns
and exactly its rows (``index`` ``start .. stop-1``, as many enrolled as recorded), and every
enrolled row holds a finite embedding of unit norm (and a finite, positive raw norm); the rows
that did not enrol hold none. :func:`load_shard` returns the table or the problem, in words.

**The unit-norm tolerance** (:data:`NORM_TOL` = 1e-4): the writer stores ``raw / ||raw||`` in
float32 (:mod:`fetoolkit.extraction`), whose norm is 1 within a few float32 rounding errors:
``|norm - 1| <= (log2(D) + 2) * 2**-24`` with numpy's pairwise sums, under 1e-6 for every
embedding length used here (measured on ORL with arcface, both columns: 1.0e-7 at most), and
under 1e-4 even for a naive sequential sum of ``D <= 1600`` squares: 100x margin over what a
correct row can show. A pair score is the dot product of two stored embeddings, so a norm off by
``t`` moves a score by at most ``t``: a row accepted at the tolerance moves only pairs within
1e-4 of a threshold, while damage is far outside it (in the audit 4 flipped bytes gave a norm of
5344). The sha256 check catches every changed bit of a recorded shard; the row checks catch rows
that were never right (a shard replaced and its record rewritten, a writer's bug) and run on
every shard before it is written too.

The identity: ``identity_sha256`` is the sha256 of the identity's canonical JSON, recomputed on
every read (:func:`identity_problem`), so an identity edited after the store was made (another
detector's settings, another model's weights) is refused, not believed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

#: Largest ``|norm - 1|`` of a stored embedding (see the module docstring).
NORM_TOL = 1e-4


def identity_digest(identity: Any) -> str:
    """sha256 hex of the canonical JSON (sorted keys) of a JSON-ready identity."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def identity_problem(manifest: dict[str, Any]) -> str | None:
    """What is wrong with a manifest's identity against its recorded ``identity_sha256``, or None."""
    recorded = manifest.get("identity_sha256")
    if not isinstance(manifest.get("identity"), dict) or not recorded:
        return "holds no identity and identity_sha256 (what made the rows)"
    got = identity_digest(manifest["identity"])
    if got != recorded:
        return (
            f"its identity (what made the rows) does not match its identity_sha256 ({got[:12]}... against "
            f"{str(recorded)[:12]}... recorded): the manifest was edited or damaged after the store was made"
        )
    return None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_shard(
    path: Path, rec: dict[str, Any], schema: pa.Schema, start: int, stop: int
) -> tuple[pa.Table | None, str | None]:
    """Read and check one recorded shard.

    Args:
        path: the shard file.
        rec: its manifest record (``bytes``, ``sha256``, ``n_rows``, ``n_ok``).
        schema: the store's row schema (:func:`fetoolkit.store.rows_schema`).
        start: first image index the shard holds.
        stop: one past its last.

    Returns:
        ``(table, None)`` for a good shard, ``(None, problem)`` otherwise (``problem`` says what is
        wrong, without the file's name).
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, "is missing"
    except OSError as e:
        return None, f"cannot be read ({e})"
    if len(data) != rec.get("bytes"):
        return None, f"is {len(data)} bytes, its manifest record says {rec.get('bytes')} (truncated or replaced)"
    if _sha256(data) != rec.get("sha256"):
        return None, "has another sha256 than its manifest record (its bytes changed after it was written)"
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (OSError, pa.ArrowException) as e:  # a damaged zstd page, a bad footer
        return None, f"cannot be decoded as Parquet ({' '.join(str(e).split())})"
    problem = rows_problem(table, schema, start, stop, rec.get("n_ok"))
    return (None, problem) if problem else (table, None)


def _column(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table.column(name).to_numpy(zero_copy_only=False))


def rows_problem(table: pa.Table, schema: pa.Schema, start: int, stop: int, n_ok: int | None = None) -> str | None:
    """What is wrong with a shard's rows (see the module docstring), or None."""
    if not table.schema.equals(schema, check_metadata=False):
        return f"has other columns than the store's ({', '.join(table.schema.names)})"
    if table.num_rows != stop - start:
        return f"holds {table.num_rows} rows, not the {stop - start} of images {start}..{stop - 1}"
    index = _column(table, "index")
    if not np.array_equal(index, np.arange(start, stop)):
        return f"holds the rows of other images than {start}..{stop - 1}"
    ok = _column(table, "ok").astype(bool)
    if n_ok is not None and int(ok.sum()) != int(n_ok):
        return f"holds {int(ok.sum())} enrolled rows, its manifest record says {n_ok}"
    paths = table.column("path").to_pylist()
    emb_cols = [c for c in ("embedding", "embedding_flip") if c in schema.names]
    for col in emb_cols:
        norm_col = "raw_norm" if col == "embedding" else "raw_flip_norm"
        arr = table.column(col).combine_chunks()
        null = np.asarray(arr.is_null().to_numpy(zero_copy_only=False), bool)
        bad = np.flatnonzero(ok & null)
        if bad.size:
            return f"row {index[bad[0]]} ({paths[bad[0]]}) enrolled but holds no {col}"
        bad = np.flatnonzero(~ok & ~null)
        if bad.size:
            return f"row {index[bad[0]]} ({paths[bad[0]]}) did not enrol but holds an {col}"
        if not ok.any():
            continue
        dim = arr.type.list_size
        values = np.asarray(arr.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(-1, dim)
        rows = np.flatnonzero(ok)  # the non-null slots, in order
        with np.errstate(over="ignore", invalid="ignore"):
            norms = np.linalg.norm(values.astype(np.float64), axis=1)
        finite = np.isfinite(values).all(axis=1)
        if not finite.all():
            j = rows[np.flatnonzero(~finite)[0]]
            return f"row {index[j]} ({paths[j]}): its {col} holds non-finite values"
        off = np.abs(norms - 1.0) > NORM_TOL
        if off.any():
            i = np.flatnonzero(off)[0]
            j = rows[i]
            return f"row {index[j]} ({paths[j]}): its {col} has norm {norms[i]:.6g}, not 1 (within {NORM_TOL:g})"
        raw = _column(table, norm_col).astype(np.float64)[ok]
        bad_raw = ~(np.isfinite(raw) & (raw > 0))
        if bad_raw.any():
            i = np.flatnonzero(bad_raw)[0]
            j = rows[i]
            return f"row {index[j]} ({paths[j]}): its {norm_col} is {raw[i]}, not a positive number"
    return None


__all__ = ["NORM_TOL", "identity_digest", "identity_problem", "load_shard", "rows_problem"]

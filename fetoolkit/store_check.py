"""What an embedding store's reader checks before it believes a shard or the store's identity.

A shard file is believed only when it has the size and the sha256 its manifest record holds,
decodes as Parquet (a damaged zstd page is a problem, not a traceback), has the store's columns
and exactly its rows (``index`` ``start .. stop-1``, as many enrolled as recorded), and every
enrolled row holds a finite embedding of unit norm (and a finite, positive raw norm); the rows
that did not enrol hold none. :func:`load_shard` returns the table or the problem, in words.

**Where the row checks run**: on every shard before it is written, on every recorded shard a
resume keeps, in ``cache verify`` (``full=True``), and on every read that takes an embedding
column (the issue's rule: an embedding is checked finite and unit-norm whenever it is read; a
shard rewritten with a bad row and its record rewritten to match passes the sha256, not this). A
read of other columns only (``full=False`` and no embedding column asked for: paths, ``ok``)
checks the size, the sha256, the columns and the row count, and decodes only those columns.

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
from collections.abc import Sequence
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


def record_problem(rec: Any, n_shards: int) -> str | None:
    """What is wrong with a manifest shard record (not an object, or ``index``, ``file``, ``bytes``,
    ``n_rows``, ``n_ok``, ``sha256`` missing or of the wrong type), or None."""
    if not isinstance(rec, dict):
        return "is not an object"
    k = rec.get("index")
    if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k < n_shards:
        return f"has no index of one of the store's {n_shards} shards"
    if rec.get("file") != f"shard-{k:05d}.parquet":
        return f"names file {rec.get('file')!r}, not that of shard {k}"
    for key in ("bytes", "n_rows", "n_ok"):
        v = rec.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            return f"has no count {key}"
    if not isinstance(rec.get("sha256"), str):
        return "has no sha256"
    return None


def record_order(rec: Any) -> int:
    """A sort key of manifest shard records that takes malformed ones too (they sort first, then are refused)."""
    k = rec.get("index") if isinstance(rec, dict) else None
    return k if isinstance(k, int) and not isinstance(k, bool) else -1


def load_shard(
    path: Path,
    rec: dict[str, Any],
    schema: pa.Schema,
    start: int,
    stop: int,
    *,
    full: bool = True,
    columns: Sequence[str] | None = None,
) -> tuple[pa.Table | None, str | None]:
    """Read and check one recorded shard.

    Args:
        path: the shard file.
        rec: its manifest record (``bytes``, ``sha256``, ``n_rows``, ``n_ok``).
        schema: the store's row schema (:func:`fetoolkit.store.rows_schema`).
        start: first image index the shard holds.
        stop: one past its last.
        full: check every row too (write, resume, verify); else the rows only when an embedding
            column is asked for (see the module docstring).
        columns: decode only these columns (all when None).

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
    wanted = None if columns is None else list(columns)
    try:
        if not full and wanted is not None and not {"embedding", "embedding_flip"} & set(wanted):
            meta = pq.ParquetFile(pa.BufferReader(data))
            n = meta.metadata.num_rows
            if not meta.schema_arrow.equals(schema, check_metadata=False):
                return None, f"has other columns than the store's ({', '.join(meta.schema_arrow.names)})"
            if n != stop - start:
                return None, f"holds {n} rows, not the {stop - start} of images {start}..{stop - 1}"
            return meta.read(columns=wanted), None
        table = pq.read_table(pa.BufferReader(data))
    except (OSError, pa.ArrowException) as e:  # a damaged zstd page, a bad footer
        return None, f"cannot be decoded as Parquet ({' '.join(str(e).split())})"
    problem = rows_problem(table, schema, start, stop, rec.get("n_ok"))
    if problem:
        return None, problem
    return (table if wanted is None else table.select(wanted)), None


def drop_unusable(rows: dict[str, Any], flip: bool) -> list[str]:
    """Mark the enrolled rows whose model output cannot be stored as not enrolled, in place.

    An embedding (or the mirrored crop's, with ``flip``) that is not finite, or whose raw norm is
    not a finite positive number (norm 0: no direction to normalise), is the model's failure on that
    image, not the shard's: the row gets ``ok`` False and a ``failure`` reason, like a face that did
    not enrol, so one such image never stops the extract (the row checks before the write stay for
    everything else).

    Args:
        rows: a shard's columns (see :func:`fetoolkit.store.rows_table`); ``ok`` and ``failure`` are replaced.
        flip: the mirrored-crop columns are present.

    Returns:
        ``"{path}: {reason}"`` of each row marked.
    """
    ok = np.array(rows["ok"], bool)
    failure = list(rows["failure"])
    marked = []
    for suffix in ("", "_flip") if flip else ("",):
        emb = np.asarray(rows[f"embedding{suffix}"], np.float32).reshape(len(ok), -1)
        raw = np.asarray(rows[f"raw{suffix}_norm"], np.float64)
        finite = np.isfinite(emb).all(axis=1) & np.isfinite(raw)
        what = "the model's " + ("mirrored-crop embedding" if suffix else "embedding")
        for i in np.flatnonzero(ok & ~(finite & (raw > 0))):
            failure[i] = f"{what} is not finite" if not finite[i] else f"{what} has norm 0"
            ok[i] = False
            marked.append(f"{rows['path'][i]}: {failure[i]}")
    rows["ok"], rows["failure"] = ok, failure
    return marked


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


__all__ = [
    "NORM_TOL",
    "drop_unusable",
    "identity_digest",
    "identity_problem",
    "load_shard",
    "record_order",
    "record_problem",
    "rows_problem",
]

"""The embedding store: a folder of Parquet shards and the ``manifest.json`` that says what they hold.

Layout of ``DIR`` (made by ``python -m fetoolkit.extract ... store=DIR``)::

    DIR/manifest.json          what made the rows (identity), the image list, the shards done, the runs
    DIR/images.parquet         the image list: index, path, image_sha256 (+ landmarks when given)
    DIR/shard-00000.parquet    rows [0, shard_size), one per image, in image-list order
    DIR/shard-00001.parquet    ...

A shard is written whole (to a temporary file beside it, then renamed) and recorded in the
manifest only once it is on disk, so a run killed at any moment leaves finished shards and at most
a stray ``.part`` file; the next run with the same settings computes only the shards the manifest
does not list. The rows of a shard (:func:`rows_schema`):

* ``index`` int64: position in the image list; ``path`` string; ``image_sha256`` string (null:
  unreadable file);
* ``ok`` bool; ``failure`` string (why the image did not enrol, null when ``ok``);
* ``embedding`` fixed-size list of float32 ``[D]``, L2-normalised (null when not ``ok``);
  ``raw_norm`` float32, the norm before normalisation (``embedding * raw_norm`` is the raw feature);
* ``embedding_flip`` / ``raw_flip_norm``: the same for the mirrored crop (when ``flip``);
* ``det_score`` float32 (NaN: no detection); ``n_faces`` int32 (-1: no detection);
  ``landmarks`` fixed-size list of float32 ``[10]`` (x1, y1, ..., x5, y5 in the image's pixels; NaN: none).

Every reader that speaks Parquet reads the shards (pandas, Ray, Spark, DuckDB:
``SELECT * FROM 'DIR/shard-*.parquet'``).

Nothing is believed unchecked (:mod:`fetoolkit.store_check`): every shard read, resumed over or
verified must match its record's size and sha256 and hold finite, unit-norm embeddings; a damaged
one is named (:class:`DamagedShard`) and computed again by the next extract. The identity must
match its ``identity_sha256``. A folder whose creation was killed before its manifest was written
is recognised (created again by the extract, named with the fix by readers), and a failed write
(a full disk, a file-size limit) names the file. One extract at a time writes a store
(:mod:`fetoolkit.store_lock`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fetoolkit.hub import atomic_path, hash_images, sha256_file
from fetoolkit.jsonutil import jsonable
from fetoolkit.store_check import (
    drop_unusable,
    identity_digest,
    identity_problem,
    load_shard,
    record_order,
    record_problem,
    rows_problem,
)

log = logging.getLogger(__name__)

FORMAT = "fetoolkit-embedding-store"
#: 1: the first layout (the columns above).
VERSION = 1
MANIFEST = "manifest.json"
IMAGES_FILE = "images.parquet"
#: The write lock's file (:mod:`fetoolkit.store_lock`).
LOCK_FILE = ".extract.lock"
#: What the fix of a damaged shard is, in every message naming one.
RECOMPUTE = "run the extract command that made the store again: it computes the damaged shards again"


class StoreError(ValueError):
    """A store that cannot be used as asked: other weights or settings, another image list, not a
    store, damaged, being written, or a write that failed."""


class DamagedShard(StoreError):
    """A recorded shard whose file fails its check (size, sha256, Parquet, rows)."""


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Turn an ``OSError`` of writing ``path`` into a :class:`StoreError` naming the file and the fix."""
    try:
        yield
    except OSError as e:
        code = e.errno
        why = os.strerror(code) if code else " ".join(str(e).split())
        fix = {
            errno.ENOSPC: "the disk is full: free space on it (or name a store= folder on another disk)",
            errno.EDQUOT: "the disk quota is used up: free space (or name a store= folder elsewhere)",
            errno.EFBIG: "a file-size limit (ulimit -f) or the file system stops it: raise the limit, or use "
            "a smaller shard_size",
            errno.EACCES: "no permission to write there: name a store= folder you can write",
            errno.EROFS: "the file system is read-only: name a store= folder you can write",
        }.get(code or -1, "fix the cause")
        raise StoreError(
            f"cannot write {path}: {why}; {fix}, then run the extract again (the shards written so far are kept)"
        ) from e


@dataclass
class ImageList:
    """The images a store holds, in order.

    Attributes:
        paths: ``N`` image files (absolute), or labels when ``images`` holds the encoded images.
        sha256: ``N`` sha256 hex of each image's bytes (None: the file could not be read).
        landmarks: float32 ``[N, 5, 2]`` given landmarks (IJB's meta file), or None: detect.
        images: ``N`` encoded images in memory (``.bin`` data sets), or None: read ``paths``.
        source: what the list was made from (data set name, root), for the manifest.
    """

    paths: list[str]
    sha256: list[str | None]
    landmarks: np.ndarray | None = None
    images: Sequence[bytes] | None = None
    source: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    def digest(self) -> str:
        """sha256 over every (path, image sha256) pair in order, and the given landmarks."""
        h = hashlib.sha256()
        for p, s in zip(self.paths, self.sha256):
            h.update(f"{p}\t{s}\n".encode())
        if self.landmarks is not None:
            h.update(np.ascontiguousarray(self.landmarks, np.float32).tobytes())
        return h.hexdigest()


def shard_plan(n: int, shard_size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` of each shard over ``n`` images."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be a positive number of images, got {shard_size}")
    return [(s, min(s + shard_size, n)) for s in range(0, n, shard_size)]


def shard_name(k: int) -> str:
    """File name of shard ``k``."""
    return f"shard-{k:05d}.parquet"


def rows_schema(dim: int, flip: bool) -> pa.Schema:
    """The Arrow schema of a shard's rows (see the module docstring)."""
    emb = pa.list_(pa.float32(), dim)
    fields = [
        ("index", pa.int64()),
        ("path", pa.string()),
        ("image_sha256", pa.string()),
        ("ok", pa.bool_()),
        ("failure", pa.string()),
        ("embedding", emb),
        ("raw_norm", pa.float32()),
    ]
    if flip:
        fields += [("embedding_flip", emb), ("raw_flip_norm", pa.float32())]
    fields += [("det_score", pa.float32()), ("n_faces", pa.int32()), ("landmarks", pa.list_(pa.float32(), 10))]
    return pa.schema(fields)


def _fixed_list(x: np.ndarray, valid: np.ndarray | None) -> pa.FixedSizeListArray:
    """float32 ``[B, K]`` -> fixed-size-list array (null where ``valid`` is False)."""
    x = np.ascontiguousarray(x, np.float32)
    values = pa.array(x.reshape(-1), pa.float32())
    mask = None if valid is None else pa.array(~np.asarray(valid, bool))
    return pa.FixedSizeListArray.from_arrays(values, x.shape[1], mask=mask)


def rows_table(rows: dict[str, Any], dim: int, flip: bool) -> pa.Table:
    """A shard's Arrow table from column arrays.

    Args:
        rows: ``index`` int64 ``[B]``, ``path`` / ``image_sha256`` / ``failure`` sequences of str or
            None, ``ok`` bool ``[B]``, ``embedding`` float32 ``[B, D]`` (L2-normalised),
            ``raw_norm`` float32 ``[B]`` (and ``embedding_flip``, ``raw_flip_norm`` with ``flip``),
            ``det_score`` float32 ``[B]``, ``n_faces`` int32 ``[B]``, ``landmarks`` float32 ``[B, 5, 2]``.
        dim: embedding length ``D``.
        flip: the mirrored-crop columns are present.

    An enrolled row whose embedding is not finite or has norm 0 is marked not enrolled first, with
    its reason (:func:`fetoolkit.store_check.drop_unusable`: ``rows["ok"]`` and ``rows["failure"]``
    are replaced), and logged.
    """
    for what in drop_unusable(rows, flip):
        log.warning("%s: did not enrol", what)
    ok = np.asarray(rows["ok"], bool)
    n = len(ok)
    cols: dict[str, pa.Array] = {
        "index": pa.array(np.asarray(rows["index"], np.int64)),
        "path": pa.array([str(p) for p in rows["path"]], pa.string()),
        "image_sha256": pa.array(list(rows["image_sha256"]), pa.string()),
        "ok": pa.array(ok),
        "failure": pa.array([None if f is None else str(f) for f in rows["failure"]], pa.string()),
        "embedding": _fixed_list(np.asarray(rows["embedding"]).reshape(n, dim), ok),
        "raw_norm": pa.array(np.asarray(rows["raw_norm"], np.float32)),
    }
    if flip:
        cols["embedding_flip"] = _fixed_list(np.asarray(rows["embedding_flip"]).reshape(n, dim), ok)
        cols["raw_flip_norm"] = pa.array(np.asarray(rows["raw_flip_norm"], np.float32))
    cols["det_score"] = pa.array(np.asarray(rows["det_score"], np.float32))
    cols["n_faces"] = pa.array(np.asarray(rows["n_faces"], np.int32))
    cols["landmarks"] = _fixed_list(np.asarray(rows["landmarks"], np.float32).reshape(n, 10), None)
    return pa.table(cols, schema=rows_schema(dim, flip))


def fixed_list_numpy(col: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
    """A fixed-size-list column -> float32 ``[N, dim]`` (NaN rows where null)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n = len(arr)
    out = np.full((n, dim), np.nan, np.float32)
    if n == 0:
        return out
    valid = ~np.asarray(arr.is_null().to_numpy(zero_copy_only=False), bool)
    values = np.asarray(arr.flatten().to_numpy(zero_copy_only=False), np.float32)  # non-null slots only
    out[valid] = values.reshape(-1, dim)
    return out


def write_shard(store: Path, k: int, table: pa.Table) -> dict[str, Any]:
    """Write shard ``k`` whole (temporary file, then rename); returns its manifest record.

    Raises:
        StoreError: its rows fail the reader's checks (a non-finite or non-unit embedding: the
            model's output, never written), or the write failed (named, with the fix).
    """
    dst = store / shard_name(k)
    index = table.column("index").to_numpy()
    start = int(index[0]) if len(index) else 0
    problem = rows_problem(table, table.schema, start, start + table.num_rows)
    if problem:
        raise StoreError(f"shard {dst.name} computed for store {store} {problem}: not written")
    with _writing(dst), atomic_path(dst) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    ok = table.column("ok").to_numpy(zero_copy_only=False)
    return {
        "index": k,
        "file": dst.name,
        "n_rows": table.num_rows,
        "n_ok": int(np.sum(ok)),
        "bytes": dst.stat().st_size,
        "sha256": sha256_file(dst),
    }


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    text = json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n"
    with _writing(path), atomic_path(path) as tmp:
        tmp.write_text(text)


def _own_images_file(path: Path) -> bool:
    """Whether ``path`` is an image list this code wrote (``index``, ``path``, ``image_sha256``)."""
    try:
        names = pq.read_schema(path).names
    except (OSError, pa.ArrowException):
        return False
    return names[:3] == ["index", "path", "image_sha256"]


def half_created(root: Path) -> bool:
    """Whether ``root`` is a store whose creation was killed before its manifest was written: no
    manifest, and nothing but its lock file, temporary files and this code's image list."""
    if not root.is_dir() or (root / MANIFEST).exists():
        return False
    rest = [p for p in root.iterdir() if p.name != LOCK_FILE and not p.name.endswith(".part")]
    if not rest:
        return (root / LOCK_FILE).exists()
    return [p.name for p in rest] == [IMAGES_FILE] and _own_images_file(root / IMAGES_FILE)


def read_manifest(store: str | Path, *, check_identity: bool = True) -> dict[str, Any]:
    """``DIR/manifest.json``, its identity checked against its ``identity_sha256`` (unless not ``check_identity``).

    Raises:
        StoreError: no manifest (a half-created store said so, with the fix), an unreadable one,
            another format or a newer version, an identity that does not match its digest.
    """
    root = Path(store).expanduser()
    path = root / MANIFEST
    if not path.is_file():
        if half_created(root):
            raise StoreError(
                f"{root} is a half-created embedding store (its creation was killed before {MANIFEST} was "
                "written): run the extract command again to create it, or delete the folder"
            )
        if root.is_dir() and any(root.glob("shard-*.parquet")):
            raise StoreError(
                f"{root} holds store shards but no {MANIFEST} (lost or removed): without it no shard can be "
                "checked; restore it, or delete the folder and run the extract again"
            )
        raise StoreError(f"{root} is not an embedding store (no {MANIFEST}); make one with python -m fetoolkit.extract")
    try:
        m = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StoreError(
            f"{path} cannot be read ({e}): the store's manifest is damaged; restore it, or delete {root} and run "
            "the extract again"
        ) from None
    if not isinstance(m, dict) or m.get("format") != FORMAT or int(m.get("version", 0)) > VERSION:
        got = m if not isinstance(m, dict) else {k: m.get(k) for k in ("format", "version")}
        raise StoreError(f"{path} is not a {FORMAT} of version <= {VERSION} ({_short(got)})")
    if not isinstance(m.get("shards"), list) or not isinstance(m.get("runs"), list):
        raise StoreError(f"{path} holds no list of shards and runs: the store's manifest is damaged; restore it")
    problem = identity_problem(m) if check_identity else None
    if problem:
        raise StoreError(
            f"{path}: {problem}; its rows cannot be taken for what it says made them: delete {root} and run "
            "the extract again (or restore the manifest as it was written)"
        )
    return m


def identity_differences(store: dict[str, Any], asked: dict[str, Any], keys: Sequence[str] | None = None) -> list[str]:
    """``key: store X, asked Y`` for each identity key (``keys``, default all) that differs."""
    out = []
    for k in keys if keys is not None else sorted(set(store) | set(asked)):
        if store.get(k) != asked.get(k):
            out.append(f"{k}: store {_short(store.get(k))}, asked {_short(asked.get(k))}")
    return out


def _short(v: Any) -> str:
    s = json.dumps(v, sort_keys=True, default=str)
    return s if len(s) <= 80 else s[:77] + "..."


def check_shard(
    root: Path,
    m: dict[str, Any],
    rec: dict[str, Any],
    plan: list[tuple[int, int]] | None = None,
    *,
    full: bool = True,
    columns: Sequence[str] | None = None,
) -> tuple[pa.Table | None, str | None]:
    """Read and check the shard of manifest record ``rec`` of the store at ``root`` (manifest ``m``):
    ``(table, None)``, or ``(None, what is wrong)`` (see :func:`fetoolkit.store_check.load_shard`;
    ``full``: check the rows too; ``columns``: decode only those). ``plan``: the store's
    :func:`shard_plan`, when the caller checks many records (made here otherwise)."""
    plan = plan if plan is not None else shard_plan(int(m["n_images"]), int(m["shard_size"]))
    problem = record_problem(rec, len(plan))
    if problem:
        return None, f"has a manifest record that {problem} ({_short(rec)}) in {root / MANIFEST}"
    schema = rows_schema(int(m["embed_dim"]), bool(m["flip"]))
    return load_shard(root / rec["file"], rec, schema, *plan[rec["index"]], full=full, columns=columns)


def damaged_message(root: Path, file: str, problem: str) -> str:
    """The one line naming a damaged shard, what is wrong and the fix."""
    return f"store {root}: shard {root / file} {problem}; it is not read: {RECOMPUTE}"


class Store:
    """An open store: its manifest, kept on disk after every change (only one writer: the driver)."""

    def __init__(self, root: Path, manifest: dict[str, Any]) -> None:
        self.root = root
        self.manifest = manifest
        #: ``(file, problem)`` of the recorded shards :meth:`done` found damaged.
        self.damaged: list[tuple[str, str]] = []

    @property
    def shard_size(self) -> int:
        """Images per shard."""
        return int(self.manifest["shard_size"])

    @property
    def n_images(self) -> int:
        """Images in the store's list."""
        return int(self.manifest["n_images"])

    def plan(self) -> list[tuple[int, int]]:
        """``(start, stop)`` of every shard."""
        return shard_plan(self.n_images, self.shard_size)

    def done(self) -> dict[int, dict[str, Any]]:
        """Shard index -> record, for the recorded shards that pass every check of
        :func:`check_shard` (the others are logged, naming them, and listed in :attr:`damaged`)."""
        out = {}
        self.damaged = []
        plan = self.plan()
        for rec in self.manifest["shards"]:
            _, problem = check_shard(self.root, self.manifest, rec, plan)
            if problem is None:
                out[int(rec["index"])] = rec
            else:
                self.damaged.append((str(rec.get("file") if isinstance(rec, dict) else rec), problem))
                log.warning("store %s: shard %s %s: it is computed again", self.root, self.damaged[-1][0], problem)
        return out

    def missing(self) -> list[int]:
        """Indices of the shards still to compute: never written, or damaged (their records are
        dropped from the manifest, so it never calls a store with a damaged shard complete)."""
        done = self.done()
        if self.damaged:
            self.manifest["shards"] = list(done.values())
            self.save()
        return [k for k in range(len(self.plan())) if k not in done]

    def save(self) -> None:
        """Rewrite ``manifest.json`` whole (``n_done`` and the counts follow the shard records)."""
        shards = sorted(self.manifest["shards"], key=record_order)
        self.manifest["shards"] = shards
        self.manifest["n_done"] = sum(r["n_rows"] for r in shards)
        self.manifest["n_ok"] = sum(r["n_ok"] for r in shards)
        self.manifest["n_failed"] = self.manifest["n_done"] - self.manifest["n_ok"]
        self.manifest["complete"] = self.manifest["n_done"] == self.n_images
        _write_json(self.root / MANIFEST, self.manifest)

    def record_shard(self, rec: dict[str, Any], run: dict[str, Any]) -> None:
        """Add a written shard's record (replacing an older one of that index), count it in ``run`` and save."""
        rec["run"] = run["run"]
        run["n_computed"] = run.get("n_computed", 0) + int(rec["n_rows"])
        run["n_shards_computed"] = run.get("n_shards_computed", 0) + 1
        self.manifest["shards"] = [r for r in self.manifest["shards"] if r["index"] != rec["index"]] + [rec]
        self.save()

    def begin_run(self, info: dict[str, Any]) -> dict[str, Any]:
        """Append a run entry (``finished: null`` until :meth:`end_run`; a killed run keeps it) and save."""
        run = {"run": len(self.manifest["runs"]), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "finished": None}
        run.update(info)
        self.manifest["runs"].append(run)
        self.save()
        return run

    def end_run(self, run: dict[str, Any]) -> None:
        """Mark ``run`` finished and save."""
        run["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.save()


def check_folder(root: Path) -> None:
    """Refuse a ``store=`` folder that is neither a store, a half-created one, nor empty (or missing).

    Raises:
        StoreError: a non-empty folder that is not a store.
    """
    if root.is_file():
        raise StoreError(f"store= {root} is a file, not a folder: name an empty or new folder")
    if (root / MANIFEST).exists() or not root.is_dir() or half_created(root):
        return
    if any(p for p in root.iterdir() if not p.name.endswith(".part") and p.name != LOCK_FILE):
        raise StoreError(
            f"store= {root} is not empty and holds no {MANIFEST}: not a store; name an empty or new folder"
        )


def open_store(
    root: str | Path,
    identity: dict[str, Any],
    images: ImageList,
    shard_size: int,
    *,
    embed_dim: int,
    flip: bool,
    about: dict[str, Any] | None = None,
) -> Store:
    """Create the store at ``root``, or open the one there after checking it holds these images made
    with these settings.

    Args:
        root: the store folder (made when missing; must be empty when it holds no manifest).
        identity: what makes the rows (model, weights, backend, contract, pipeline, detector, threads,
            libraries): a store made with another is refused, never mixed.
        images: the image list.
        shard_size: images per shard (a store keeps its own: another value is refused).
        embed_dim: embedding length.
        flip: rows hold the mirrored crops' embeddings too.
        about: more manifest keys written at creation (library versions, the CPU).

    Raises:
        StoreError: another identity, image list or shard size; a non-empty folder that is not a store.
    """
    root = Path(root).expanduser().resolve()
    if (root / MANIFEST).is_file():
        m = read_manifest(root)
        diff = identity_differences(m["identity"], jsonable(identity))
        if diff:
            raise StoreError(
                f"store {root} was made with other settings ({'; '.join(diff)}): use another store= folder, "
                "or the settings it was made with"
            )
        if m["images"]["sha256"] != images.digest() or m["n_images"] != len(images):
            src = _short(m["images"].get("source"))
            raise StoreError(
                f"store {root} holds another image list ({m['n_images']} images, from {src}) "
                f"than asked ({len(images)} images): use another store= folder"
            )
        if int(m["shard_size"]) != shard_size:
            raise StoreError(
                f"store {root} has shard_size={m['shard_size']}: resume it with that value, not {shard_size}"
            )
        return Store(root, m)
    check_folder(root)
    if half_created(root) and (root / IMAGES_FILE).exists():
        log.warning("store %s: its creation was killed before %s was written: it is created again", root, MANIFEST)
    root.mkdir(parents=True, exist_ok=True)
    _write_images(root / IMAGES_FILE, images)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "identity": identity,
        "identity_sha256": identity_digest(jsonable(identity)),
        "images": {"file": IMAGES_FILE, "sha256": images.digest(), "source": images.source},
        "n_images": len(images),
        "shard_size": shard_size,
        "n_shards": len(shard_plan(len(images), shard_size)),
        "embed_dim": embed_dim,
        "flip": flip,
        "columns": rows_schema(embed_dim, flip).names,
        "shards": [],
        "runs": [],
        **(about or {}),
    }
    store = Store(root, manifest)
    store.save()
    log.info("new store %s: %d images in %d shards of %d", root, len(images), manifest["n_shards"], shard_size)
    return store


def _write_images(path: Path, images: ImageList) -> None:
    cols: dict[str, Any] = {
        "index": pa.array(np.arange(len(images), dtype=np.int64)),
        "path": pa.array(images.paths, pa.string()),
        "image_sha256": pa.array(images.sha256, pa.string()),
    }
    if images.landmarks is not None:
        cols["landmarks"] = _fixed_list(images.landmarks.reshape(len(images), 10), None)
    with _writing(path), atomic_path(path) as tmp:
        pq.write_table(pa.table(cols), tmp)


def read_rows(store: str | Path, columns: Sequence[str] | None = None) -> pa.Table:
    """Every recorded shard's rows (``columns``: only those), in image-list order (only shards the
    manifest lists), each checked by :func:`check_shard` as a read is (size, sha256, columns, row
    count; and every row, when an embedding column is read).

    Raises:
        DamagedShard: a shard that fails its check, named with what is wrong and the fix.
    """
    root = Path(store).expanduser()
    m = read_manifest(root)
    tables = []
    plan = shard_plan(int(m["n_images"]), int(m["shard_size"]))
    for rec in sorted(m["shards"], key=record_order):
        table, problem = check_shard(root, m, rec, plan, full=False, columns=columns)
        if table is None:
            raise DamagedShard(
                damaged_message(root, str(rec.get("file") if isinstance(rec, dict) else rec), str(problem))
            )
        tables.append(table)
    if not tables:
        empty = rows_schema(int(m["embed_dim"]), bool(m["flip"])).empty_table()
        return empty.select(list(columns)) if columns else empty
    return pa.concat_tables(tables)


def store_size_bytes(store: str | Path) -> int:
    """Bytes of the store's files."""
    return sum(f.stat().st_size for f in Path(store).iterdir() if f.is_file())


__all__ = [
    "FORMAT",
    "IMAGES_FILE",
    "LOCK_FILE",
    "MANIFEST",
    "RECOMPUTE",
    "DamagedShard",
    "VERSION",
    "ImageList",
    "Store",
    "StoreError",
    "check_folder",
    "check_shard",
    "damaged_message",
    "half_created",
    "fixed_list_numpy",
    "hash_images",
    "identity_differences",
    "open_store",
    "read_manifest",
    "read_rows",
    "rows_schema",
    "rows_table",
    "shard_name",
    "shard_plan",
    "store_size_bytes",
    "write_shard",
]

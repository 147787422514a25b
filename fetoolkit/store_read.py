"""Reading an embedding store for a data set: the eval's and the identification gallery's side.

:func:`store_embedded` checks the store's manifest against the model, contract, pipeline and
detector asked for (refusing, in one line, what differs), matches its rows to the data set's images
by path and sha256 (by sha256 alone when the images moved: counted) and returns the
:class:`fetoolkit.pipeline.EmbeddedSet` ``embed_dataset`` would have computed. The raw features are
``embedding * raw_norm``; the normalised ones are the stored embeddings themselves (so pair scores
equal those of the run that made the store, to the bit when its threads were the eval's).

Every shard read is checked first (size, sha256, Parquet, finite unit-norm embeddings:
:func:`fetoolkit.store.read_rows`), and the identity against its digest: a damaged store is
refused naming the file, never read. Rows computed on several CPU ISAs are reported (a warning and
``isa_mixed`` in the ``embeddings_source`` record).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fetoolkit.jsonutil import jsonable
from fetoolkit.pipeline import EmbeddedSet
from fetoolkit.store import (
    MANIFEST,
    StoreError,
    fixed_list_numpy,
    half_created,
    hash_images,
    identity_differences,
    read_manifest,
    read_rows,
)
from fetoolkit.store_identity import READ_KEYS
from fetoolkit.store_verify import isa_mixed, isa_warning, run_isa

log = logging.getLogger(__name__)


def is_store(path: str | Path | None) -> bool:
    """Whether ``path`` is a folder holding a store manifest, or a half-created store (refused by
    the reader with the fix, rather than taken for a folder of images)."""
    if path is None:
        return False
    root = Path(path).expanduser()
    return (root / MANIFEST).is_file() or half_created(root)


def check_store(root: str | Path, asked: dict[str, Any], *, need_flip: bool) -> dict[str, Any]:
    """The manifest of a complete store made as ``asked`` (see :mod:`fetoolkit.store_identity`).

    Raises:
        StoreError: not a store, unfinished, made with another model / contract / pipeline /
            detector, or without the mirrored-crop features the reader needs.
    """
    m = read_manifest(root)
    if not m.get("complete"):
        raise StoreError(
            f"store {root} is unfinished ({m.get('n_done')} of {m.get('n_images')} images): run the extract "
            "command that made it again to complete it"
        )
    have = m["identity"]
    diff = identity_differences(have, jsonable(asked), READ_KEYS)
    if diff:
        raise StoreError(f"store {root} was made with other settings than asked ({'; '.join(diff)})")
    if need_flip and not m.get("flip"):
        raise StoreError(
            f"store {root} holds no mirrored-crop features (made with flip=false) and they are asked for "
            "(quality.flip / pipeline.flip_test): extract with flip=true, or set quality.flip=false"
        )
    for soft in identity_differences(have, jsonable(asked), ("threads", "libs")):
        log.warning("store %s: %s (rows may differ from a fresh computation in the last float digits)", root, soft)
    _, warning = isa_warning(Path(root), m)
    if warning:
        log.warning("%s", warning)
    return m


def _names(paths: Sequence[Path | str], images: Sequence[bytes] | None) -> list[str]:
    """Paths as the store writes them: resolved for files, as given for in-memory labels."""
    if images is not None:
        return [str(p) for p in paths]
    return [str(Path(p).expanduser().resolve()) for p in paths]


def match_rows(
    store_paths: Sequence[str], store_sha: Sequence[str | None], names: Sequence[str], sha: Sequence[str | None]
) -> tuple[np.ndarray, int]:
    """Row of the store for each data set image: by (path, sha256), else by sha256 when one row has it.

    Returns:
        (int64 ``[N]`` store row per image, -1 where none; how many matched by content alone).
    """
    by_key = {(p, s): i for i, (p, s) in enumerate(zip(store_paths, store_sha)) if s is not None}
    by_sha: dict[str, int] = {}
    dup: set[str] = set()
    for i, s in enumerate(store_sha):
        if s is None:
            continue
        if s in by_sha:
            dup.add(s)
        by_sha[s] = i
    out = np.full(len(names), -1, np.int64)
    moved = 0
    for j, (p, s) in enumerate(zip(names, sha)):
        if s is None:
            continue
        i = by_key.get((p, s))
        if i is None and s in by_sha and s not in dup:
            i, moved = by_sha[s], moved + 1
        if i is not None:
            out[j] = i
    return out, moved


def store_embedded(
    root: str | Path,
    paths: Sequence[Path | str],
    asked: dict[str, Any],
    *,
    images: Sequence[bytes] | None = None,
    need_flip: bool = False,
) -> tuple[EmbeddedSet, dict[str, Any]]:
    """The embeddings of a data set's images, read from the store at ``root``.

    Args:
        root: the store folder.
        paths: the data set's ``N`` images (labels when ``images`` is given).
        asked: the identity the reader's settings make (:func:`fetoolkit.store_identity.store_identity`).
        images: the encoded images in memory (``.bin``), or None.
        need_flip: the mirrored crops' features are needed (flip-consistency score, flip test).

    Returns:
        (the :class:`EmbeddedSet` (``cache`` = ``"store"``), the ``embeddings_source`` record for results.json).

    Raises:
        StoreError: see :func:`check_store`; or images of the data set the store does not hold.
    """
    t0 = time.perf_counter()
    root = Path(root).expanduser().resolve()
    m = check_store(root, asked, need_flip=need_flip)
    names = _names(paths, images)
    sha = hash_images(names, images)
    t_hash = time.perf_counter() - t0
    table = read_rows(root)
    rows, moved = match_rows(table.column("path").to_pylist(), table.column("image_sha256").to_pylist(), names, sha)
    if (rows < 0).any():
        miss = [names[j] for j in np.flatnonzero(rows < 0)]
        raise StoreError(
            f"store {root} does not hold {len(miss)} of the {len(names)} images of the data set (first: {miss[0]}): "
            "extract this data set into its own store"
        )
    d = int(m["embed_dim"])
    ok = np.asarray(table.column("ok").to_numpy(zero_copy_only=False), bool)[rows]
    unit = fixed_list_numpy(table.column("embedding"), d)[rows]
    norm = np.asarray(table.column("raw_norm").to_numpy(zero_copy_only=False), np.float32)[rows]
    raw = unit * norm[:, None]
    raw_flip = None
    if m.get("flip"):
        uf = fixed_list_numpy(table.column("embedding_flip"), d)[rows]
        raw_flip = (
            uf * np.asarray(table.column("raw_flip_norm").to_numpy(zero_copy_only=False), np.float32)[rows][:, None]
        )
    reasons = table.column("failure").to_pylist()
    failures = {
        j: f"{Path(names[j]) if images is None else names[j]}: {reasons[i]}" for j, i in enumerate(rows) if not ok[j]
    }
    lm = fixed_list_numpy(table.column("landmarks"), 10)[rows].reshape(-1, 5, 2)
    es = EmbeddedSet(
        raw=raw,
        raw_flip=raw_flip,
        ok=ok,
        det_scores=np.asarray(table.column("det_score").to_numpy(zero_copy_only=False), np.float32)[rows],
        n_faces=np.asarray(table.column("n_faces").to_numpy(zero_copy_only=False), np.int32)[rows],
        landmarks=lm,
        failures=failures,
        cache="store",
        crops_cache="store",
        timing_s={"hash": round(t_hash, 3), "store_read": round(time.perf_counter() - t0 - t_hash, 3)},
        key=m["identity_sha256"],
        unit=unit,
    )
    if moved:
        log.warning("store %s: %d images matched by content alone (their paths differ from the store's)", root, moved)
    log.info("embeddings of %d images read from store %s (%d did not enrol)", len(names), root, int((~ok).sum()))
    source = {
        "store": str(root),
        "identity_sha256": m["identity_sha256"],
        "n_images_store": m["n_images"],
        "n_matched_by_content": moved,
        "threads": m["identity"].get("threads"),
        "runs": [
            {**{k: r.get(k) for k in ("run", "engine", "workers", "n_computed", "finished")}, "isa": run_isa(m, r)}
            for r in m["runs"]
        ],
        "isa_mixed": isa_mixed(m),
    }
    return es, source


def store_gallery(root: str | Path, asked: dict[str, Any]) -> np.ndarray:
    """float32 ``[G, D]`` L2-normalised embeddings of every enrolled row of a store (a 1:N gallery
    or distractor set), after the identity check."""
    m = check_store(root, asked, need_flip=False)
    table = read_rows(root, ["ok", "embedding"])
    ok = np.asarray(table.column("ok").to_numpy(zero_copy_only=False), bool)
    if not ok.all():
        log.warning(
            "store %s: %d of %d images did not enrol and are left out of the gallery", root, int((~ok).sum()), len(ok)
        )
    return fixed_list_numpy(table.column("embedding"), int(m["embed_dim"]))[ok]


def eval_embedded(
    root: str | Path,
    data: Any,
    embedder: Any,
    pipeline: Any,
    detector: Any,
    quality: Any,
    threads: int | None,
) -> tuple[EmbeddedSet, dict[str, Any]]:
    """The eval's embeddings of ``data`` (an :class:`fetoolkit.data.EvalData`) from the store at ``root``,
    checked against the eval's ``embedder``, ``pipeline`` and ``detector`` settings; the mirrored
    crops' features are required when ``quality.flip`` or the flip test asks for them."""
    from fetoolkit.store_identity import store_identity

    flip_test = pipeline.flip_test if pipeline.flip_test is not None else data.templates is not None
    need_flip = bool(quality.flip or flip_test)
    asked = store_identity(
        embedder,
        pipeline,
        detector,
        aligned=data.aligned,
        given_landmarks=data.landmarks is not None,
        flip=need_flip,
        threads=threads,
    )
    return store_embedded(root, data.paths, asked, images=data.images, need_flip=need_flip)

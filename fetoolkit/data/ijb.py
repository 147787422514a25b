"""IJB-B / IJB-C, in the layout insightface's ``recognition/_evaluation_/ijb`` reads.

``root`` holds ``loose_crop/`` (the images) and ``meta/`` with, for ``name`` = ``ijbc`` or ``ijbb``
(space separated, no header):

* ``{name}_face_tid_mid.txt``: ``img_name template_id media_id``, one line per image;
* ``{name}_template_pair_label.txt``: ``tid1 tid2 label`` (1 genuine, 0 impostor), the 1:1 protocol;
* ``{name}_name_5pts_score.txt``: ``img_name x1 y1 ... x5 y5 faceness``, landmarks in the
  ``loose_crop`` image's pixels (the crop is aligned from them: no detection);

and, for open-set 1:N identification (CSV with a header; column 0 TEMPLATE_ID, column 1
SUBJECT_ID, then FILENAME and more): ``{name}_1N_gallery_G1.csv``, ``{name}_1N_gallery_G2.csv`` and
``{name}_1N_probe_mixed.csv``. The 1:N templates are those of ``face_tid_mid`` (as insightface's
1:N script builds them).

Every line is checked; an error names the file and the line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fetoolkit.data.protocols import PairProtocol
from fetoolkit.templates import Templates

log = logging.getLogger(__name__)

__all__ = ["IjbError", "IjbSet", "Search", "load_ijb"]

LAYOUTS = ("ijbc", "ijbb")


class IjbError(ValueError):
    """An IJB meta file is missing or malformed (the message names the file and the line)."""


@dataclass(frozen=True)
class Search:
    """One side of a 1:N protocol: templates (indices into the 1:1 templates) and their subjects.

    Attributes:
        templates: int64 ``[K]`` template indices.
        subjects: int64 ``[K]`` subject id of each.
        source: the CSV it came from.
    """

    templates: np.ndarray
    subjects: np.ndarray
    source: str


@dataclass(frozen=True)
class IjbSet:
    """An IJB data set read from its meta files.

    Attributes:
        paths: ``N`` image files under ``loose_crop``.
        landmarks: float32 ``[N, 5, 2]`` in each image's pixels.
        templates: images -> templates and media (faceness = the meta file's score).
        pairs: template pairs (indices into ``templates.ids``), labels; one fold.
        galleries: ``{"G1": Search, "G2": Search}`` when the 1:N files exist, else empty.
        probes: the mixed probes, or None.
        meta: files read, counts.
    """

    paths: list[Path]
    landmarks: np.ndarray
    templates: Templates
    pairs: PairProtocol
    galleries: dict[str, Search] = field(default_factory=dict)
    probes: Search | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def _read_table(path: Path, n_cols: int, what: str, dtypes: dict[int, Any]) -> pd.DataFrame:
    """A space-separated table without header, every line ``n_cols`` fields of the given types."""
    if not path.is_file():
        raise IjbError(f"{path}: missing ({what}); dataset.root must hold meta/ and loose_crop/")
    if all(dtypes.get(c, str) is int for c in range(n_cols)):  # the 15.6M-line pair list: parsed as integers
        try:
            fast = pd.read_csv(path, sep=r"\s+", header=None, dtype=np.int64, engine="c")
            if fast.shape[1] == n_cols:
                return fast
        except (ValueError, TypeError, pd.errors.ParserError, pd.errors.EmptyDataError):
            pass  # read again as text below, to name the bad line
    try:
        df = pd.read_csv(path, sep=r"\s+", header=None, dtype=str, engine="c", keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise IjbError(f"{path}: empty ({what})") from None
    except pd.errors.ParserError as e:
        raise IjbError(f"{path}: not {n_cols} space-separated fields per line ({what}): {e}") from None
    if df.shape[1] != n_cols:
        raise IjbError(f"{path}: {df.shape[1]} fields per line, {what} has {n_cols}")
    out = {}
    for c in range(n_cols):
        col = df[c]
        kind = dtypes.get(c, str)
        if kind is str:
            out[c] = col.to_numpy(object)
            continue
        num = pd.to_numeric(col, errors="coerce")
        bad = num.isna().to_numpy().copy()
        if kind is int and not bad.all():
            bad |= (num.fillna(0) != num.fillna(0).round()).to_numpy()
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise IjbError(f"{path}, line {k + 1}: field {c + 1} is {col.iloc[k]!r}, not a number ({what})")
        out[c] = num.to_numpy(np.int64 if kind is int else np.float64)
    return pd.DataFrame(out)


def _read_search(path: Path, template_index: dict[int, int]) -> Search:
    """A 1:N CSV (header; TEMPLATE_ID, SUBJECT_ID, ...): one row per template."""
    try:
        df = pd.read_csv(path, usecols=[0, 1])
    except (pd.errors.ParserError, ValueError) as e:
        raise IjbError(f"{path}: not a CSV with TEMPLATE_ID, SUBJECT_ID columns: {e}") from None
    if df.empty:
        raise IjbError(f"{path}: no rows")
    t = pd.to_numeric(df.iloc[:, 0], errors="coerce")
    s = pd.to_numeric(df.iloc[:, 1], errors="coerce")
    bad = (t.isna() | s.isna()).to_numpy()
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise IjbError(f"{path}, line {k + 2}: TEMPLATE_ID / SUBJECT_ID not numbers: {df.iloc[k, :2].tolist()}")
    pairs = pd.DataFrame({"t": t.astype(np.int64), "s": s.astype(np.int64)}).drop_duplicates()
    two = pairs["t"].duplicated(keep=False).to_numpy()
    if two.any():
        tid = int(pairs["t"].to_numpy()[two][0])
        raise IjbError(f"{path}: template {tid} is listed under two subjects")
    unknown = [int(x) for x in pairs["t"] if int(x) not in template_index]
    if unknown:
        raise IjbError(
            f"{path}: {len(unknown)} templates are not in the face_tid_mid file (first: {unknown[0]}); "
            "the 1:N templates are built from the 1:1 image list"
        )
    idx = np.array([template_index[int(x)] for x in pairs["t"]], np.int64)
    return Search(idx, pairs["s"].to_numpy(np.int64), str(path))


def load_ijb(root: str | Path, name: str = "ijbc") -> IjbSet:
    """Read an IJB-B/C folder (see the module docstring).

    Raises:
        IjbError: a meta file missing or malformed, images without landmarks, pairs naming
            unknown templates; the message names the file (and line).
    """
    if name not in LAYOUTS:
        raise IjbError(f"unknown IJB layout {name!r}; known: {', '.join(LAYOUTS)}")
    root = Path(root).expanduser()
    meta, crops = root / "meta", root / "loose_crop"
    if not crops.is_dir():
        raise IjbError(f"{crops}: missing; dataset.root must hold meta/ and loose_crop/")
    tid_file = meta / f"{name}_face_tid_mid.txt"
    pair_file = meta / f"{name}_template_pair_label.txt"
    lm_file = meta / f"{name}_name_5pts_score.txt"
    tm = _read_table(tid_file, 3, "img_name template_id media_id", {1: int, 2: int})
    lm = _read_table(lm_file, 12, "img_name x1 y1 ... x5 y5 faceness", {k: float for k in range(1, 12)})
    pr = _read_table(pair_file, 3, "tid1 tid2 label", {0: int, 1: int, 2: int})

    names = tm[0].to_numpy(object)
    dup = pd.Series(names).duplicated().to_numpy()
    if dup.any():
        raise IjbError(f"{tid_file}, line {int(np.flatnonzero(dup)[0]) + 1}: image {names[dup][0]} listed twice")
    lm_names = pd.Index(lm[0].to_numpy(object))
    if lm_names.has_duplicates:
        k = int(np.flatnonzero(lm_names.duplicated())[0])
        raise IjbError(f"{lm_file}, line {k + 1}: image {lm_names[k]} listed twice")
    where = lm_names.get_indexer(names)
    if (where < 0).any():
        miss = names[where < 0]
        raise IjbError(f"{lm_file}: {len(miss)} images of {tid_file.name} have no landmarks (first: {miss[0]})")
    points = lm[list(range(1, 11))].to_numpy(np.float32)[where].reshape(-1, 5, 2)
    faceness = lm[11].to_numpy(np.float32)[where]

    tids = tm[1].to_numpy(np.int64)
    ids, image_template = np.unique(tids, return_inverse=True)
    templates = Templates(image_template.astype(np.int64), tm[2].to_numpy(np.int64), ids, faceness)
    index = pd.Index(ids)
    a, b = index.get_indexer(pr[0].to_numpy()), index.get_indexer(pr[1].to_numpy())
    unknown = (a < 0) | (b < 0)
    if unknown.any():
        k = int(np.flatnonzero(unknown)[0])
        raise IjbError(
            f"{pair_file}, line {k + 1}: template {pr.iloc[k, 0] if a[k] < 0 else pr.iloc[k, 1]} has no image in "
            f"{tid_file.name} ({int(unknown.sum())} such pairs)"
        )
    labels = pr[2].to_numpy()
    if not np.isin(labels, (0, 1)).all():
        k = int(np.flatnonzero(~np.isin(labels, (0, 1)))[0])
        raise IjbError(f"{pair_file}, line {k + 1}: label {labels[k]} is not 0 or 1")
    pairs = PairProtocol(a.astype(np.int64), b.astype(np.int64), labels == 1, np.zeros(len(a), np.int64))

    galleries: dict[str, Search] = {}
    probes = None
    g_files = {g: meta / f"{name}_1N_gallery_{g}.csv" for g in ("G1", "G2")}
    p_file = meta / f"{name}_1N_probe_mixed.csv"
    found = [p for p in (*g_files.values(), p_file) if p.is_file()]
    if found and len(found) < 3:
        missing = [p.name for p in (*g_files.values(), p_file) if not p.is_file()]
        raise IjbError(f"{meta}: 1:N needs the two galleries and the mixed probes; missing {', '.join(missing)}")
    if found:
        t_index = {int(t): k for k, t in enumerate(ids)}
        galleries = {g: _read_search(p, t_index) for g, p in g_files.items()}
        probes = _read_search(p_file, t_index)
    paths = [crops / str(n) for n in names]
    log.info(
        "%s: %d images, %d templates, %d template pairs (%d genuine)%s",
        name,
        len(paths),
        len(ids),
        len(pairs),
        pairs.n_genuine,
        f"; 1:N galleries {', '.join(galleries)}, {len(probes.templates)} probe templates" if probes else "",
    )
    return IjbSet(
        paths,
        points,
        templates,
        pairs,
        galleries,
        probes,
        meta={
            "root": str(root),
            "layout": name,
            "n_templates": int(len(ids)),
            "n_media": int(len(np.unique(np.stack([image_template, templates.image_media], axis=1), axis=0))),
            "protocol": f"{name} 1:1 template pairs ({tid_file.name}, {pair_file.name}); "
            f"landmarks from {lm_file.name}" + ("; 1:N G1/G2 with mixed probes" if probes else ""),
        },
    )

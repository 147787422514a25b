"""A pair list in a CSV file: ``path1,path2,label`` (optionally a fourth column ``fold``).

* A header row is optional; it is recognised when its third field is not a label and its first
  two fields are not image file names (a data row with a bad label is an error, not a header).
* ``label``: ``1``/``0``, ``true``/``false``, ``same``/``different``, ``yes``/``no``
  (1 = same person).
* Relative paths are resolved against ``root`` (default: the CSV's folder).
* ``fold``: integer fold ids. Without it the pairs are split into ``n_folds`` folds at random
  (seeded, stratified by label); such folds are not subject-disjoint -- give the column when
  that matters.
* A pair listed again (in either order) is counted once by default (``dataset.duplicate_pairs``,
  :mod:`fetoolkit.data.repeats`), before the folds are drawn.
* UTF-8 text; a leading byte-order mark is dropped (it would otherwise start the first path).
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fetoolkit.data.protocols import PairProtocol, fit_folds
from fetoolkit.data.repeats import find_repeats
from fetoolkit.data.sources import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

_TRUE = {"1", "true", "same", "yes", "genuine", "match"}
_FALSE = {"0", "false", "different", "no", "impostor", "nonmatch", "mismatch"}


class PairsCsvError(ValueError):
    """A malformed pairs CSV; the message names the row."""


def _label(value: str) -> bool | None:
    v = value.strip().lower()
    return True if v in _TRUE else False if v in _FALSE else None


@dataclass(frozen=True)
class CsvPairs:
    """Images and pairs read from a pairs CSV.

    Attributes:
        paths: the distinct image files, ``N`` (first-use order).
        pairs: pairs of indices into ``paths`` (a repeated pair once, unless ``duplicate_pairs="keep"``).
        repeats: ``results.json`` ``data.duplicate_pairs`` (:func:`fetoolkit.data.repeats.find_repeats`).
    """

    paths: list[Path]
    pairs: PairProtocol
    repeats: dict[str, Any] = field(default_factory=dict)


def _names_images(row: list[str]) -> bool:
    return any(Path(f.strip()).suffix.lower() in IMAGE_SUFFIXES for f in row[:2])


def _is_header(rows: list[list[str]]) -> bool:
    """Row 0 is a header when it names no image file and either its label field is not a label
    (``path1,path2,label``) or the next row does name image files (``a,b,same``: "same" is a
    label word, but ``a`` and ``b`` are column names, not images)."""
    first = rows[0]
    if len(first) < 3 or _names_images(first):
        return False
    return _label(first[2]) is None or (len(rows) > 1 and _names_images(rows[1]))


def _read_rows(path: Path) -> tuple[list[list[str]], list[int]]:
    """The non-blank rows of a UTF-8 CSV (byte-order mark dropped) and their line numbers."""
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            for r in reader:
                if r and any(c.strip() for c in r):
                    rows.append(r)
                    lines.append(reader.line_num)
    except UnicodeDecodeError as e:
        raise PairsCsvError(
            f"{path}: not UTF-8 text ({e.reason} at byte {e.start}, after line {len(lines)}); save it as UTF-8 "
            "(e.g. iconv -f latin1 -t utf-8)"
        ) from None
    return rows, lines


def load_pairs_csv(
    path: str | Path,
    *,
    root: str | Path | None = None,
    n_folds: int = 10,
    seed: int = 0,
    duplicate_pairs: str = "once",
) -> CsvPairs:
    """Read a ``path1,path2,label[,fold]`` CSV.

    Args:
        path: the CSV.
        root: relative paths are resolved here (default: the CSV's folder).
        n_folds: folds drawn when the CSV has no fold column.
        seed: seed of those folds.
        duplicate_pairs: ``once`` (a pair listed again, in either order, is counted once) or ``keep``.

    Raises:
        FileNotFoundError: no such CSV.
        PairsCsvError: a file that is not UTF-8, a row with too few fields, an unknown label, a bad
            fold id, no pairs or only one class.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pairs CSV not found: {path} (set dataset.path=PATH)")
    base = Path(root) if root is not None else path.parent
    rows, lines = _read_rows(path)
    if rows and _is_header(rows):
        log.info("%s: first row %s read as a header", path, rows[0][:3])
        rows, lines = rows[1:], lines[1:]
    if not rows:
        raise PairsCsvError(f"{path}: no pairs")
    index: dict[Path, int] = {}
    paths: list[Path] = []
    a, b, lab, fold = [], [], [], []
    has_fold = len(rows[0]) >= 4
    for no, r in enumerate(rows, 1):
        if len(r) < 3 or (has_fold and len(r) < 4):
            raise PairsCsvError(
                f"{path}: pair row {no} has {len(r)} fields; expected path1,path2,label{',fold' if has_fold else ''}"
            )
        y = _label(r[2])
        if y is None:
            raise PairsCsvError(f"{path}: pair row {no}: label {r[2]!r} is not 1/0, true/false or same/different")
        ids = []
        for p in (r[0].strip(), r[1].strip()):
            full = Path(p) if Path(p).is_absolute() else base / p
            if full not in index:
                index[full] = len(paths)
                paths.append(full)
            ids.append(index[full])
        a.append(ids[0])
        b.append(ids[1])
        lab.append(y)
        if has_fold:
            try:
                fold.append(int(r[3]))
            except ValueError:
                raise PairsCsvError(f"{path}: pair row {no}: fold {r[3]!r} is not an integer") from None
    labels = np.asarray(lab, bool)
    found = find_repeats(
        np.asarray(a, np.int64),
        np.asarray(b, np.int64),
        labels,
        policy=duplicate_pairs,
        describe=lambda k: f"{paths[a[k]]} & {paths[b[k]]}",
        row_name=lambda k: f"line {lines[k]}",
        source=str(path),
    )
    if not found.keep.all():
        keep = found.keep
        a, b = [x for x, k in zip(a, keep) if k], [x for x, k in zip(b, keep) if k]
        fold = [x for x, k in zip(fold, keep) if k] if has_fold else fold
        labels = labels[keep]
    if labels.all() or not labels.any():
        raise PairsCsvError(
            f"{path}: needs both genuine and impostor pairs; got {int(labels.sum())} genuine of {labels.size}"
        )
    if has_fold:
        f_arr = np.asarray(fold, np.int64)
        f_arr = np.unique(f_arr, return_inverse=True)[1].astype(np.int64)  # consecutive 0..K-1
    else:
        rarer = int(min(labels.sum(), (~labels).sum()))
        k = fit_folds(
            n_folds,
            rarer,
            f"{path}: {rarer} pairs of the rarer class (each fold needs one of each)",
            f"add pairs, give a fold column, or set dataset.n_folds=<k> to choose (asked: {n_folds})",
        )
        rng = np.random.default_rng(seed)
        f_arr = np.empty(labels.size, np.int64)
        for cls in (True, False):
            pos = rng.permutation(np.flatnonzero(labels == cls))
            f_arr[pos] = np.arange(pos.size) % k
    missing = sum(not p.is_file() for p in paths)
    if missing:
        log.warning("%d of %d images named in %s are missing (they will fail to enrol)", missing, len(paths), path)
    return CsvPairs(paths, PairProtocol(np.asarray(a, np.int64), np.asarray(b, np.int64), labels, f_arr), found.report)


def write_pairs_csv(path: str | Path, rows: list[tuple[str, str, bool]], *, header: bool = True) -> Path:
    """Write ``path1,path2,label`` rows (for tests and export)."""
    path = Path(path)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        if header:
            w.writerow(["path1", "path2", "label"])
        for p1, p2, y in rows:
            w.writerow([p1, p2, int(bool(y))])
    return path

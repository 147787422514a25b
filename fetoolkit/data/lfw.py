"""LFW's ``pairs.txt`` protocol over the ``<root>/<Name>/<Name>_<NNNN>.jpg`` image tree.

The standard file (``pairs.txt``, View 2) starts with a header ``10 300``: 10 sets of 300
matched pairs followed by 300 mismatched pairs. A matched line is ``name i j`` (images ``i``
and ``j`` of ``name``), a mismatched line ``name1 i name2 j``. The 10 sets are the 10 folds of
the LFW protocol. ``pairsDevTrain.txt`` / ``pairsDevTest.txt`` have a one-number header ``N``:
one set of ``N`` matched then ``N`` mismatched pairs. The same files drive the full images
(detection + alignment), ``lfw-funneled``, ``lfw-deepfunneled`` and aligned variants; only the
root folder (and for aligned crops ``aligned: true``) changes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fetoolkit.data.protocols import PairProtocol

log = logging.getLogger(__name__)


class PairsFileError(ValueError):
    """A ``pairs.txt`` that does not follow the LFW format; the message names the line."""


@dataclass(frozen=True)
class LfwPair:
    """One line of ``pairs.txt``: image ``i`` of ``name1`` against image ``j`` of ``name2``."""

    name1: str
    i: int
    name2: str
    j: int
    fold: int

    @property
    def same(self) -> bool:
        return self.name1 == self.name2


def parse_pairs(path: str | Path) -> tuple[list[LfwPair], int, int]:
    """Read an LFW ``pairs.txt``.

    Args:
        path: the file.

    Returns:
        ``(pairs, n_sets, n_per_class)``: pairs in file order, each with its set (= fold) index.

    Raises:
        FileNotFoundError: no such file.
        PairsFileError: a file that is not UTF-8, a malformed header or line, or a set that does not
            hold exactly ``n_per_class`` matched and ``n_per_class`` mismatched pairs.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LFW pairs file not found: {path} (set dataset.pairs=PATH)")
    try:  # utf-8-sig: a byte-order mark would otherwise start the header
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise PairsFileError(
            f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None
    lines = [(k + 1, ln.split()) for k, ln in enumerate(text.splitlines())]
    lines = [(k, t) for k, t in lines if t]
    if not lines:
        raise PairsFileError(f"{path}: empty file")
    head_no, head = lines[0]
    try:
        nums = [int(t) for t in head]
    except ValueError:
        raise PairsFileError(
            f"{path}:{head_no}: header must be 'n_sets n_per_class' (e.g. '10 300') "
            f"or 'n_per_class', got {' '.join(head)!r}"
        ) from None
    if len(nums) == 2:
        n_sets, n_per = nums
    elif len(nums) == 1:
        n_sets, n_per = 1, nums[0]
    else:
        raise PairsFileError(f"{path}:{head_no}: header must hold one or two numbers, got {head}")
    if n_sets < 1 or n_per < 1:
        raise PairsFileError(f"{path}:{head_no}: header numbers must be positive, got {nums}")
    body = lines[1:]
    if len(body) != 2 * n_sets * n_per:
        raise PairsFileError(
            f"{path}: header '{' '.join(head)}' announces {n_sets} x (2 x {n_per}) = "
            f"{2 * n_sets * n_per} pairs, the file has {len(body)} pair lines"
        )
    pairs: list[LfwPair] = []
    for pos, (no, tok) in enumerate(body):
        fold = pos // (2 * n_per)
        try:
            if len(tok) == 3:
                p = LfwPair(tok[0], int(tok[1]), tok[0], int(tok[2]), fold)
            elif len(tok) == 4:
                p = LfwPair(tok[0], int(tok[1]), tok[2], int(tok[3]), fold)
            else:
                raise ValueError
        except ValueError:
            raise PairsFileError(
                f"{path}:{no}: expected 'name i j' or 'name1 i name2 j', got {' '.join(tok)!r}"
            ) from None
        if len(tok) == 4 and p.same:
            raise PairsFileError(f"{path}:{no}: a mismatched line names the same person twice")
        if p.i < 1 or p.j < 1:
            raise PairsFileError(f"{path}:{no}: image numbers start at 1, got {p.i}, {p.j}")
        pairs.append(p)
    for k in range(n_sets):
        chunk = pairs[k * 2 * n_per : (k + 1) * 2 * n_per]
        n_same = sum(p.same for p in chunk)
        if n_same != n_per:
            raise PairsFileError(
                f"{path}: set {k + 1} holds {n_same} matched and {2 * n_per - n_same} "
                f"mismatched pairs; the header says {n_per} of each"
            )
    return pairs, n_sets, n_per


def lfw_image_path(root: Path, name: str, i: int, ext: str = "jpg") -> Path:
    """``root/<name>/<name>_<iiii>.<ext>``."""
    return root / name / f"{name}_{i:04d}.{ext}"


@dataclass(frozen=True)
class LfwSet:
    """Images and pairs of an LFW-style protocol.

    Attributes:
        paths: the distinct images the pairs use, ``N`` (first-use order).
        identities: int64 ``[N]`` identity index into ``names``.
        names: identity names.
        pairs: the pairs, folds = sets of ``pairs.txt``.
    """

    paths: list[Path]
    identities: np.ndarray
    names: list[str]
    pairs: PairProtocol


def load_lfw(root: str | Path, pairs: str | Path, *, ext: str = "jpg") -> LfwSet:
    """Read ``pairs.txt`` and resolve its images under ``root``.

    Missing image files are not an error here: they fail to enrol in the pipeline, where the
    ``fte_policy`` decides (drop and count, or fail).

    Raises:
        FileNotFoundError: ``root`` or ``pairs`` missing.
        PairsFileError: see :func:`parse_pairs`.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"LFW image folder not found: {root} (set dataset.root=PATH: the folder holding <Name>/<Name>_0001.jpg)"
        )
    plist, n_sets, n_per = parse_pairs(pairs)
    index: dict[tuple[str, int], int] = {}
    names: dict[str, int] = {}
    paths: list[Path] = []
    ids: list[int] = []

    def img(name: str, i: int) -> int:
        key = (name, i)
        if key not in index:
            index[key] = len(paths)
            paths.append(lfw_image_path(root, name, i, ext))
            ids.append(names.setdefault(name, len(names)))
        return index[key]

    a = np.empty(len(plist), np.int64)
    b = np.empty(len(plist), np.int64)
    for k, p in enumerate(plist):
        a[k], b[k] = img(p.name1, p.i), img(p.name2, p.j)
    labels = np.array([p.same for p in plist], bool)
    folds = np.array([p.fold for p in plist], np.int64)
    missing = sum(not p.is_file() for p in paths)
    if missing:
        log.warning(
            "%d of %d images named in %s are missing under %s (they will fail to enrol)",
            missing,
            len(paths),
            pairs,
            root,
        )
    log.info(
        "LFW protocol %s: %d sets x %d matched + %d mismatched, %d images", pairs, n_sets, n_per, n_per, len(paths)
    )
    return LfwSet(paths, np.asarray(ids, np.int64), list(names), PairProtocol(a, b, labels, folds))


def write_pairs(
    path: str | Path, sets: list[tuple[list[tuple[str, int, int]], list[tuple[str, int, str, int]]]]
) -> Path:
    """Write a ``pairs.txt`` (for tests and for exporting a protocol).

    Args:
        path: output file.
        sets: per set, (matched ``(name, i, j)`` list, mismatched ``(name1, i, name2, j)`` list),
            all sets with the same number of each.
    """
    n_per = len(sets[0][0])
    if any(len(m) != n_per or len(u) != n_per for m, u in sets):
        raise ValueError("every set needs the same number of matched and mismatched pairs")
    out = [f"{len(sets)}\t{n_per}"]
    for matched, mismatched in sets:
        out += [f"{n}\t{i}\t{j}" for n, i, j in matched]
        out += [f"{n1}\t{i}\t{n2}\t{j}" for n1, i, n2, j in mismatched]
    path = Path(path)
    path.write_text("\n".join(out) + "\n")
    return path

"""RFW-style layouts: one LFW-format pair list per group, evaluated as one run with groups.

Racial Faces in-the-Wild (Wang et al., 2019) and sets built like it ship, per group ``G``:

* ``<root>/txts/<G>/<G>_pairs.txt``: LFW ``pairs.txt`` lines (``name i j`` / ``name1 i name2 j``),
  with or without the ``n_sets n_per`` header; without it the lines are split into 10 consecutive
  sets of equal size (RFW's 10 folds of 300 matched then 300 mismatched pairs);
* ``<root>/data/<G>/<Name>/<Name>_<NNNN>.jpg``: the images.

All groups' pairs are scored in one run (fold ``k`` of every group is fold ``k`` of the run), and
every image carries its group (attribute ``group``), so ``results.json`` gets the ``groups``
section without a group file.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from fetoolkit.data.lfw import PairsFileError, load_lfw
from fetoolkit.data.protocols import PairProtocol

log = logging.getLogger(__name__)

#: RFW's sets per list when the file has no header.
RFW_SETS = 10


def _with_header(pairs: Path, tmp: Path) -> Path:
    """``pairs`` itself when it starts with an LFW header, else a copy with ``10 n`` prepended."""
    lines = [ln for ln in pairs.read_text().splitlines() if ln.split()]
    if not lines:
        raise PairsFileError(f"{pairs}: empty file")
    if all(t.isdigit() for t in lines[0].split()):
        return pairs
    n = len(lines)
    if n % (2 * RFW_SETS):
        raise PairsFileError(
            f"{pairs}: no header and {n} pair lines, which do not split into {RFW_SETS} sets of equal matched and "
            "mismatched halves; add the LFW header 'n_sets n_per_class'"
        )
    out = tmp / pairs.name
    out.write_text(f"{RFW_SETS} {n // (2 * RFW_SETS)}\n" + "\n".join(lines) + "\n")
    return out


def rfw_groups(root: Path) -> list[str]:
    """The groups of an RFW-style root: the folders of ``txts/`` that hold ``<G>_pairs.txt``."""
    txts = root / "txts"
    if not txts.is_dir():
        raise FileNotFoundError(f"{root} has no txts/ folder (RFW layout: txts/<G>/<G>_pairs.txt, data/<G>/...)")
    groups = sorted(p.name for p in txts.iterdir() if (p / f"{p.name}_pairs.txt").is_file())
    if not groups:
        raise FileNotFoundError(f"{txts}: no <G>/<G>_pairs.txt inside")
    return groups


def load_rfw(
    root: str | Path, groups: list[str] | None = None, *, ext: str = "jpg"
) -> tuple[list[Path], np.ndarray, list[str], PairProtocol, np.ndarray]:
    """Read every group's pair list.

    Returns:
        ``(paths [N], identities int64 [N], identity names, pairs, group object [N])``; identity
        names are ``<G>/<Name>`` so that equal names in two groups stay two people.
    """
    root = Path(root).expanduser()
    names_all = groups or rfw_groups(root)
    paths: list[Path] = []
    ids: list[np.ndarray] = []
    names: list[str] = []
    img_group: list[str] = []
    parts = []
    with tempfile.TemporaryDirectory() as tmp:
        for g in names_all:
            pairs = root / "txts" / g / f"{g}_pairs.txt"
            if not pairs.is_file():
                raise FileNotFoundError(f"{pairs} not found (RFW layout: txts/<G>/<G>_pairs.txt)")
            read = _with_header(pairs, Path(tmp))
            try:
                s = load_lfw(root / "data" / g, read, ext=ext)
            except PairsFileError as e:
                if read == pairs:
                    raise
                # name the user's file, not the headed copy read in its place
                note = f"{pairs} (no header: read as {RFW_SETS} sets, line numbers + 1)"
                raise PairsFileError(str(e).replace(str(read), note)) from None
            off, id_off = len(paths), len(names)
            paths += s.paths
            ids.append(s.identities + id_off)
            names += [f"{g}/{n}" for n in s.names]
            img_group += [g] * len(s.paths)
            p = s.pairs
            parts.append(PairProtocol(p.idx_a + off, p.idx_b + off, p.labels, p.folds))
    pairs_all = PairProtocol(
        np.concatenate([p.idx_a for p in parts]),
        np.concatenate([p.idx_b for p in parts]),
        np.concatenate([p.labels for p in parts]),
        np.concatenate([p.folds for p in parts]),
    )
    log.info("RFW layout %s: groups %s, %d images, %d pairs", root, ", ".join(names_all), len(paths), len(pairs_all))
    return paths, np.concatenate(ids), names, pairs_all, np.asarray(img_group, dtype=object)

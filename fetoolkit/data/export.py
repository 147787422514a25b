"""Write a data set in the published benchmark layouts: an LFW tree + ``pairs.txt``, an insightface ``.bin``.

    python -m fetoolkit.data.export --lfw out/orl_lfw --bin out/orl_aligned.bin

writes ORL (its 10 subject-disjoint k-fold sets, the same pairs ``dataset=orl`` scores) as

* ``out/orl_lfw/lfw/<Name>/<Name>_<NNNN>.jpg`` (full images, JPEG) and ``out/orl_lfw/pairs.txt``
  (header ``10 180``): evaluate with ``dataset=lfw dataset.root=out/orl_lfw/lfw
  dataset.pairs=out/orl_lfw/pairs.txt``;
* ``out/orl_aligned.bin``: 5-point aligned 112x112 crops (MTCNN, or ``--detector yunet|retinaface``),
  JPEG-encoded, two consecutive
  images per pair, 10 folds of consecutive pairs: evaluate with ``dataset=bin
  dataset.path=out/orl_aligned.bin``.

Both readers are thereby checked against ``dataset=orl`` on real faces.

    python -m fetoolkit.data.export --scores outputs/eval/RUN --bob scores.txt [--folds 1-5]

writes an eval run's ROC comparisons (or, with ``--folds``, its k-fold comparisons of those folds,
1-based) as a bob.bio 4-column score file (``--bob-columns 5`` for 5 columns), which
``dataset=scores dataset.path=scores.txt`` evaluates (and bob.measure reads).
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from fetoolkit.data.binset import write_bin
from fetoolkit.data.lfw import lfw_image_path, write_pairs
from fetoolkit.data.protocols import PairProtocol
from fetoolkit.imageio import read_image

log = logging.getLogger(__name__)


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    """uint8 ``[H, W, 3]`` RGB (or ``[H, W]`` grey) -> JPEG bytes (deterministic for equal input)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _fold_order(pairs: PairProtocol) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per fold (ascending): (genuine pair indices, impostor pair indices), equal in number."""
    out = []
    for f in np.unique(pairs.folds):
        sel = pairs.folds == f
        g, i = np.flatnonzero(sel & pairs.labels), np.flatnonzero(sel & ~pairs.labels)
        out.append((g, i))
    sizes = {len(x) for gi in out for x in gi}
    if len(sizes) != 1:
        raise ValueError(
            f"LFW-style sets need the same number of genuine and impostor pairs in every fold; got {sorted(sizes)}"
        )
    return out


def write_lfw_tree(
    paths: Sequence[Path],
    identities: np.ndarray,
    names: Sequence[str],
    pairs: PairProtocol,
    out_dir: str | Path,
    *,
    quality: int = 95,
) -> tuple[Path, Path]:
    """Write images as ``out_dir/lfw/<Name>/<Name>_<NNNN>.jpg`` and the pairs as ``out_dir/pairs.txt``.

    Args:
        paths: image files ``N``.
        identities: int ``[N]`` index into ``names``.
        names: identity names (no whitespace).
        pairs: the protocol; each fold becomes one set, genuine pairs first.
        out_dir: output folder.
        quality: JPEG quality.

    Returns:
        ``(image root, pairs.txt)``.
    """
    out_dir = Path(out_dir)
    root = out_dir / "lfw"
    number = np.zeros(len(paths), np.int64)
    seen: dict[int, int] = {}
    for k, ident in enumerate(identities):
        seen[int(ident)] = seen.get(int(ident), 0) + 1
        number[k] = seen[int(ident)]
        target = lfw_image_path(root, names[int(ident)], int(number[k]))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(encode_jpeg(read_image(paths[k]), quality))
    sets = []
    for g, i in _fold_order(pairs):
        nm = [
            (names[int(identities[a])], int(number[a]), int(number[b])) for a, b in zip(pairs.idx_a[g], pairs.idx_b[g])
        ]
        mm = [
            (names[int(identities[a])], int(number[a]), names[int(identities[b])], int(number[b]))
            for a, b in zip(pairs.idx_a[i], pairs.idx_b[i])
        ]
        sets.append((nm, mm))
    return root, write_pairs(out_dir / "pairs.txt", sets)


def write_aligned_bin(
    crops: np.ndarray, pairs: PairProtocol, path: str | Path, *, quality: int = 95, protocol: int = 4
) -> Path:
    """Write aligned crops as an insightface ``.bin``: two consecutive JPEG images per pair.

    Args:
        crops: uint8 ``[N, 112, 112, 3]`` RGB aligned crops.
        pairs: the protocol; pairs are written fold by fold (ascending), so the reader's 10
            consecutive folds are these folds when they are equal in size.
        path: output file.
        quality: JPEG quality.
        protocol: pickle protocol.
    """
    enc = {}
    blobs: list[bytes] = []
    same: list[bool] = []
    for g, i in _fold_order(pairs):
        for k in np.concatenate([g, i]):
            for idx in (int(pairs.idx_a[k]), int(pairs.idx_b[k])):
                if idx not in enc:
                    enc[idx] = encode_jpeg(crops[idx], quality)
                blobs.append(enc[idx])
            same.append(bool(pairs.labels[k]))
    return write_bin(path, blobs, same, protocol=protocol)


def _fold_range(text: str) -> set[int]:
    lo, _, hi = text.partition("-")
    return set(range(int(lo), int(hi or lo) + 1))


def export_scores(source: Path, out: Path, *, columns: int = 4, folds: str | None = None) -> Path:
    """An eval run's comparisons (``source``: its folder or ``pairs.parquet``) as a bob score file.

    Args:
        source: the run.
        out: the bob file to write.
        columns: 4 or 5.
        folds: ``"1-5"``: the k-fold comparisons of folds 1..5 (1-based) instead of the ROC ones.
    """
    from fetoolkit.data.scores import load_scores, write_bob

    s = load_scores(source)
    if folds is None:
        pairs = s.roc
    else:
        if s.kfold is None or s.kfold_folds is None:
            raise ValueError(f"{source} has no k-fold comparisons")
        pairs = s.kfold.subset(np.isin(s.kfold_folds + 1, sorted(_fold_range(folds))))
        if not len(pairs):
            raise ValueError(f"{source}: no k-fold comparisons in folds {folds}")
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_bob(out, pairs, columns=columns)


def main(argv: Sequence[str] | None = None) -> int:
    from fetoolkit.cache import EmbeddingCache
    from fetoolkit.data import from_identities, load_orl
    from fetoolkit.detect.registry import build_detector, detector_cfg_for, list_detectors
    from fetoolkit.pipeline import PipelineCfg, cached_crops, detector_settings

    ap = argparse.ArgumentParser(prog="python -m fetoolkit.data.export", description=__doc__.split("\n\n")[0])
    ap.add_argument("--lfw", type=Path, help="write ORL as an LFW tree + pairs.txt into this folder")
    ap.add_argument("--bin", type=Path, help="write ORL's aligned crops as this .bin")
    ap.add_argument(
        "--detector", default="mtcnn", choices=list_detectors(), help="the detector that aligns the --bin crops"
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of the k-fold protocol (dataset=orl uses seed=0)")
    ap.add_argument("--scores", type=Path, help="an eval run folder (or its pairs.parquet) to write as --bob")
    ap.add_argument("--bob", type=Path, help="the bob score file to write from --scores")
    ap.add_argument("--bob-columns", type=int, default=4, choices=(4, 5), help="bob's 4- or 5-column format")
    ap.add_argument("--folds", help="with --scores: the k-fold comparisons of these folds (1-based, e.g. 1-5)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if bool(args.scores) != bool(args.bob):
        ap.error("--scores RUN and --bob FILE go together")
    if args.scores:
        try:
            path = export_scores(args.scores, args.bob, columns=args.bob_columns, folds=args.folds)
        except (OSError, ValueError) as e:
            log.error("%s", e)
            return 2
        log.info("wrote %s", path)
        if not args.lfw and not args.bin:
            return 0
    if not args.lfw and not args.bin:
        ap.error("give --lfw DIR and/or --bin FILE (or --scores RUN --bob FILE)")
    orl = load_orl()
    data = from_identities(orl, 10, args.seed, "kfold")
    if args.lfw:
        root, pairs = write_lfw_tree(orl.paths, orl.identities, orl.names, data.kfold, args.lfw)
        log.info("wrote %s and %s", root, pairs)
    if args.bin:
        dcfg = detector_cfg_for(args.detector)
        crops, state = cached_crops(
            orl.paths,
            PipelineCfg(),
            detector=lambda: build_detector(dcfg, num_threads=1, backend="torch"),  # as the eval job builds it
            cache=EmbeddingCache(),
            detector_settings=detector_settings(dcfg),
        )
        if not crops.ok.all():
            log.error("%d ORL images did not enrol; cannot write every pair", int((~crops.ok).sum()))
            return 1
        args.bin.parent.mkdir(parents=True, exist_ok=True)
        log.info("wrote %s (crops cache %s)", write_aligned_bin(crops.faces, data.kfold, args.bin), state)
    return 0


if __name__ == "__main__":
    sys.exit(main())

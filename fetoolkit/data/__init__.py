"""Data sets and verification protocols, built from a ``dataset`` config.

Readers: ``orl`` (fetched), ``folder`` (one folder per identity), ``lfw`` (``pairs.txt`` over
an image tree), ``bin`` (insightface verification ``.bin``), ``csv`` (``path1,path2,label``),
``rfw`` (one LFW pair list per group, :mod:`fetoolkit.data.rfw`). ``scores`` (score files, no
images) is read by :mod:`fetoolkit.data.scores` in its own job path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fetoolkit.data.protocols import PairProtocol, all_pairs, kfold_pairs
from fetoolkit.data.sources import IdentityDataset, load_identity_folder, load_orl

DATASETS = ("orl", "folder", "lfw", "bin", "csv", "rfw", "scores")


@dataclass(frozen=True)
class EvalData:
    """What an evaluation needs: the images and the two pair protocols.

    Attributes:
        name: data set name.
        paths: image files, ``N`` (for in-memory images: labels such as ``lfw.bin#12``).
        aligned: images are aligned crops already (no detection).
        kfold: pairs with folds for k-fold accuracy.
        roc: pairs for the ROC, EER and TAR@FAR (may be the same as ``kfold``).
        images: ``N`` encoded images held in memory (``.bin``), or None: read ``paths``.
        identities: int64 ``[N]`` identity of each image, or None when unknown (``.bin``, CSV).
        identity_names: name of each identity id, or None.
        meta: reader details for reports (source files, protocol).
        image_groups: attribute -> object ``[N]`` group of each image, when the layout gives
            groups (RFW's per-group pair lists), else None.
    """

    name: str
    paths: list[Path]
    aligned: bool
    kfold: PairProtocol
    roc: PairProtocol
    images: Sequence[bytes] | None = None
    identities: np.ndarray | None = None
    identity_names: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    image_groups: dict[str, np.ndarray] | None = None

    def subject_names(self) -> np.ndarray | None:
        """object ``[N]``: each image's subject (its identity name, else the id as text); None when unknown."""
        if self.identities is None:
            return None
        if self.identity_names is not None:
            return np.asarray(self.identity_names, dtype=object)[self.identities]
        return self.identities.astype(str).astype(object)


def from_identities(ds: IdentityDataset, n_folds: int, seed: int, roc_pairs: str) -> EvalData:
    """Protocols generated from identity labels (ORL, identity folders)."""
    if roc_pairs not in ("all", "kfold"):
        raise ValueError(f"dataset.roc_pairs must be 'all' or 'kfold', got {roc_pairs!r}")
    kfold = kfold_pairs(ds.identities, n_folds=n_folds, seed=seed)
    roc = all_pairs(ds.identities) if roc_pairs == "all" else kfold
    return EvalData(
        ds.name,
        ds.paths,
        ds.aligned,
        kfold,
        roc,
        identities=ds.identities,
        identity_names=ds.names,
        meta={
            "protocol": f"{n_folds} subject-disjoint folds; ROC over {roc_pairs} pairs",
            **ds.meta,
            "skipped": list(ds.skipped),
        },
    )


def _required(cfg: Any, key: str, what: str) -> Any:
    value = cfg.get(key)
    if value is None:
        raise ValueError(f"dataset={cfg.name} needs dataset.{key}: {what}")
    return value


def load_eval_data(cfg: Any, seed: int = 0) -> EvalData:
    """Build ``EvalData`` from a ``dataset`` config node (``name`` picks the reader)."""
    name = cfg.name
    label = cfg.get("label") or name
    if name == "orl":
        return from_identities(load_orl(cfg.get("root")), cfg.n_folds, seed, cfg.roc_pairs)
    if name == "folder":
        root = _required(cfg, "root", "a folder with one sub-folder of images per identity")
        ds = load_identity_folder(root, name=label, aligned=bool(cfg.get("aligned", False)))
        return from_identities(ds, cfg.n_folds, seed, cfg.roc_pairs)
    if name == "lfw":
        from fetoolkit.data.lfw import load_lfw

        root = _required(cfg, "root", "the folder holding <Name>/<Name>_0001.jpg")
        pairs = _required(cfg, "pairs", "the pairs.txt file")
        s = load_lfw(root, pairs, ext=cfg.get("ext") or "jpg")
        return EvalData(
            label,
            s.paths,
            bool(cfg.get("aligned", False)),
            s.pairs,
            s.pairs,
            identities=s.identities,
            identity_names=s.names,
            meta={"root": str(root), "pairs": str(pairs), "protocol": "pairs.txt sets as folds"},
        )
    if name == "bin":
        from fetoolkit.data.binset import load_bin

        path = Path(_required(cfg, "path", "an insightface verification file such as lfw.bin"))
        b = load_bin(path, n_folds=int(cfg.get("n_folds") or 10))
        labels = [Path(f"{path.name}#{k}") for k in range(len(b.images))]
        return EvalData(
            cfg.get("label") or path.stem,
            labels,
            True,
            b.pairs,
            b.pairs,
            images=b.images,
            meta={
                "path": str(path),
                "n_encoded": b.n_encoded,
                "protocol": "consecutive pairs in 10 folds (insightface)",
            },
        )
    if name == "csv":
        from fetoolkit.data.csvpairs import load_pairs_csv

        path = _required(cfg, "path", "a CSV of path1,path2,label")
        c = load_pairs_csv(path, root=cfg.get("root"), n_folds=int(cfg.get("n_folds") or 10), seed=seed)
        return EvalData(
            label,
            c.paths,
            bool(cfg.get("aligned", False)),
            c.pairs,
            c.pairs,
            meta={"path": str(path), "protocol": "CSV pairs"},
        )
    if name == "rfw":
        from fetoolkit.data.rfw import load_rfw

        root = _required(cfg, "root", "the folder holding txts/<G>/<G>_pairs.txt and data/<G>/")
        groups = list(cfg.get("groups") or []) or None
        paths, ids, names, pairs, image_group = load_rfw(root, groups, ext=cfg.get("ext") or "jpg")
        return EvalData(
            label,
            paths,
            bool(cfg.get("aligned", False)),
            pairs,
            pairs,
            identities=ids,
            identity_names=names,
            meta={"root": str(root), "protocol": "one LFW pair list per group; sets as folds"},
            image_groups={"group": image_group},
        )
    if name == "scores":
        raise ValueError("dataset=scores is evaluated without images: use fetoolkit.score_eval.run_scores")
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")


__all__ = [
    "DATASETS",
    "EvalData",
    "IdentityDataset",
    "PairProtocol",
    "all_pairs",
    "from_identities",
    "kfold_pairs",
    "load_eval_data",
    "load_identity_folder",
    "load_orl",
]

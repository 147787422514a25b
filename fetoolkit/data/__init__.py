"""Data sets and verification protocols, built from a ``dataset`` config."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fetoolkit.data.protocols import PairProtocol, all_pairs, kfold_pairs
from fetoolkit.data.sources import IdentityDataset, load_identity_folder, load_orl


@dataclass(frozen=True)
class EvalData:
    """What an evaluation needs: the images and the two pair protocols.

    Attributes:
        name: data set name.
        paths: image files, ``N``.
        aligned: images are aligned crops already (no detection).
        kfold: pairs with folds for k-fold accuracy.
        roc: pairs for the ROC, EER and TAR@FAR (may be the same as ``kfold``).
    """

    name: str
    paths: list[Path]
    aligned: bool
    kfold: PairProtocol
    roc: PairProtocol


def from_identities(ds: IdentityDataset, n_folds: int, seed: int, roc_pairs: str) -> EvalData:
    """Protocols generated from identity labels (ORL, identity folders)."""
    kfold = kfold_pairs(ds.identities, n_folds=n_folds, seed=seed)
    roc = all_pairs(ds.identities) if roc_pairs == "all" else kfold
    return EvalData(ds.name, ds.paths, ds.aligned, kfold, roc)


def load_eval_data(cfg: Any, seed: int = 0) -> EvalData:
    """Build ``EvalData`` from a ``dataset`` config node (``name`` picks the reader)."""
    name = cfg.name
    if name == "orl":
        return from_identities(load_orl(cfg.get("root")), cfg.n_folds, seed, cfg.roc_pairs)
    if name == "folder":
        ds = load_identity_folder(cfg.root, name=cfg.get("label", "folder"), aligned=bool(cfg.get("aligned", False)))
        return from_identities(ds, cfg.n_folds, seed, cfg.roc_pairs)
    raise ValueError(f"unknown dataset {name!r}; known: orl, folder")


__all__ = ["EvalData", "IdentityDataset", "PairProtocol", "all_pairs", "kfold_pairs", "load_eval_data",
           "load_identity_folder", "load_orl"]

"""Verification protocols: which image pairs are compared, their labels and folds."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PairProtocol:
    """Pairs of image indices with labels and fold ids.

    Attributes:
        idx_a: int64 ``[P]`` index of the first image of each pair.
        idx_b: int64 ``[P]`` index of the second image.
        labels: bool ``[P]``, True for a genuine (same identity) pair.
        folds: int64 ``[P]`` fold id in ``0..n_folds-1`` (all 0 when there are no folds).
    """

    idx_a: np.ndarray
    idx_b: np.ndarray
    labels: np.ndarray
    folds: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.idx_a)
        if not (len(self.idx_b) == len(self.labels) == len(self.folds) == n):
            raise ValueError("idx_a, idx_b, labels and folds must have the same length")

    def __len__(self) -> int:
        return len(self.idx_a)

    @property
    def n_genuine(self) -> int:
        return int(self.labels.sum())

    @property
    def n_impostor(self) -> int:
        return int((~self.labels).sum())

    def subset(self, keep: np.ndarray) -> PairProtocol:
        """The pairs where bool ``keep`` ``[P]`` is True."""
        return PairProtocol(self.idx_a[keep], self.idx_b[keep], self.labels[keep], self.folds[keep])


def _pairs_within(members: np.ndarray, identities: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All unordered pairs among the image indices ``members``: (a, b, genuine)."""
    ia, ib = np.triu_indices(len(members), k=1)
    a, b = members[ia], members[ib]
    return a, b, identities[a] == identities[b]


def fit_folds(requested: int, available: int, what: str, fix: str, *, quiet: bool = False) -> int:
    """The folds a data set can have: ``requested``, or fewer (with a warning naming ``fix``) when it
    holds only ``available`` units that can form a fold; the same rule for every data set.

    Args:
        requested: the folds asked for (``dataset.n_folds``, 10 by default).
        available: the most folds the data allows (identities // 2, or the pairs of the rarer class).
        what: what ``available`` counts, for the messages.
        fix: how to get the requested folds (or to silence the warning).
        quiet: no warning (a count made ahead of the protocol, which warns itself).

    Raises:
        ValueError: fewer than 2 folds are possible (k-fold accuracy needs a held-out fold).
    """
    if requested < 2:
        raise ValueError(f"dataset.n_folds must be >= 2, got {requested}")
    if available < 2:
        raise ValueError(f"{what}: no 2 folds can be made for k-fold accuracy; {fix}")
    if available < requested:
        if quiet:
            return available
        log.warning("%s: %d-fold accuracy instead of %d-fold; %s", what, available, requested, fix)
        return available
    return requested


#: The most pairs a generated protocol may hold or enumerate (``dataset.max_pairs``): about 25 bytes a
#: pair in memory, more while scoring.
MAX_PAIRS = 50_000_000


def _fold_groups(
    identities: np.ndarray, n_folds: int, rng: np.random.Generator, *, quiet: bool = False
) -> list[np.ndarray]:
    """The subjects of each fold of :func:`kfold_pairs` (the first draws of ``rng``)."""
    subjects, counts = np.unique(identities, return_counts=True)
    multi = subjects[counts >= 2]  # identities that can give a genuine pair
    n_folds = fit_folds(
        n_folds,
        min(len(subjects) // 2, len(multi)),
        f"{len(subjects)} identities, {len(multi)} of them with 2 or more images (a fold needs 2 identities for "
        "its impostor pairs and one with 2 images for its genuine pairs)",
        f"add identities (at least {2 * n_folds}, {n_folds} of them with 2+ images, for {n_folds} folds) or set "
        "dataset.n_folds=<k> to choose",
        quiet=quiet,
    )
    if len(multi) == len(subjects):
        return list(np.array_split(rng.permutation(subjects), n_folds))
    # single-image identities: every fold gets identities with 2+ images first, then the rest
    parts_m = [list(g) for g in np.array_split(rng.permutation(multi), n_folds)]
    for s in rng.permutation(subjects[counts < 2]):
        min(parts_m, key=len).append(s)
    return [np.asarray(g) for g in parts_m]


@dataclass(frozen=True)
class PairBudget:
    """How many pairs the generated protocols of a data set make, known before any is made.

    Attributes:
        n_images: images.
        all_pairs: pairs of ``roc_pairs=all`` (every pair of images).
        kfold_pairs: at most this many k-fold pairs (every genuine pair of each fold, as many impostors).
        kfold_enumerated: pairs :func:`kfold_pairs` enumerates within its folds to sample the impostors.
        n_folds: the folds the data allows of those asked.
        max_folds: the most folds the identities allow (see :func:`fit_folds`).
    """

    n_images: int
    all_pairs: int
    kfold_pairs: int
    kfold_enumerated: int
    n_folds: int
    max_folds: int


def pair_budget(identities: np.ndarray, n_folds: int = 10, seed: int = 0) -> PairBudget:
    """The pair counts of :func:`all_pairs` and :func:`kfold_pairs` from the identity labels alone
    (the same fold split, no pair made): milliseconds for 50,000 images."""
    identities = np.asarray(identities)
    groups = _fold_groups(identities, n_folds, np.random.default_rng(seed), quiet=True)
    subjects, inverse, counts = np.unique(identities, return_inverse=True, return_counts=True)
    genuine = counts.astype(np.int64) * (counts - 1) // 2
    fold_of = np.empty(len(subjects), np.int64)
    for k, g in enumerate(groups):
        fold_of[np.searchsorted(subjects, g)] = k
    members = np.bincount(fold_of[inverse.reshape(-1)], minlength=len(groups)).astype(np.int64)
    fold_genuine = np.bincount(fold_of, weights=genuine, minlength=len(groups)).astype(np.int64)
    n = len(identities)
    return PairBudget(
        n,
        n * (n - 1) // 2,
        int(2 * fold_genuine.sum()),
        int((members * (members - 1) // 2).sum()),
        len(groups),
        min(len(subjects) // 2, int((counts >= 2).sum())),
    )


def check_budget(budget: PairBudget, roc_pairs: str, max_pairs: int = MAX_PAIRS, what: str = "the data set") -> None:
    """Refuse protocols over ``max_pairs`` before any pair is made, naming the settings that fit.

    Raises:
        ValueError: the ROC over every pair (``roc_pairs=all``), or the k-fold protocol (its pairs or
            the pairs it enumerates within its folds), exceeds ``max_pairs``.
    """
    b = budget
    kfold = max(b.kfold_pairs, b.kfold_enumerated)
    folds_needed = max(b.n_folds + 1, int(np.ceil(b.n_images**2 / (2 * max_pairs))))
    more_folds = (
        f"set dataset.n_folds={folds_needed} or more (smaller folds), "
        if folds_needed <= b.max_folds and b.kfold_pairs <= max_pairs
        else ""
    )
    fix_kfold = (
        f"the k-fold protocol enumerates {b.kfold_enumerated:,} pairs within its {b.n_folds} folds (and keeps up to "
        f"{b.kfold_pairs:,}), also more than dataset.max_pairs={max_pairs:,}: {more_folds}use fewer images, or raise "
        "dataset.max_pairs (about 25 bytes a pair, more while scoring)"
    )
    if roc_pairs == "all" and b.all_pairs > max_pairs:
        fit = (
            f"set dataset.roc_pairs=kfold (the ROC over the k-fold pairs: up to {b.kfold_pairs:,} pairs, "
            f"{b.kfold_enumerated:,} enumerated within the folds)"
            if kfold <= max_pairs
            else f"dataset.roc_pairs=kfold would not fit either: {fix_kfold}"
        )
        raise ValueError(
            f"{what}: {b.n_images:,} images make {b.all_pairs:,} pairs for the ROC over every pair "
            f"(dataset.roc_pairs=all), more than dataset.max_pairs={max_pairs:,}; {fit}"
            + ("; or raise dataset.max_pairs (about 25 bytes a pair, more while scoring)" if kfold <= max_pairs else "")
        )
    if kfold > max_pairs:
        raise ValueError(f"{what}: {b.n_images:,} images: {fix_kfold}")


def kfold_pairs(identities: np.ndarray, n_folds: int = 10, seed: int = 0) -> PairProtocol:
    """Subject-disjoint folds: every genuine pair of a fold plus as many impostor pairs.

    Subjects are shuffled with ``seed`` and split into ``n_folds`` groups; each fold holds all
    genuine pairs of its subjects and the same number of impostor pairs sampled (without
    replacement, fixed seed) among its subjects' images.

    Args:
        identities: int ``[N]`` identity id of each image.
        n_folds: folds asked for (10 for the LFW-style protocol); fewer, with a warning, when
            there are fewer than ``2 * n_folds`` identities (see :func:`fit_folds`).
        seed: seed of the subject shuffle and impostor sampling.

    Every pair within a fold is enumerated to sample its impostors: check the count first with
    :func:`pair_budget` and :func:`check_budget` on large data sets.
    """
    identities = np.asarray(identities)
    rng = np.random.default_rng(seed)
    groups = _fold_groups(identities, n_folds, rng)
    parts: list[tuple[np.ndarray, ...]] = []
    for k, group in enumerate(groups):
        members = np.flatnonzero(np.isin(identities, group))
        a, b, gen = _pairs_within(members, identities)
        imp = np.flatnonzero(~gen)
        n_gen = int(gen.sum())
        if n_gen == 0:
            raise ValueError(f"fold {k} has no genuine pair (one image per identity?)")
        pick = np.sort(rng.choice(imp, size=min(n_gen, len(imp)), replace=False))
        sel = np.concatenate([np.flatnonzero(gen), pick])
        parts.append((a[sel], b[sel], gen[sel], np.full(len(sel), k)))
    a, b, lab, fold = (np.concatenate(x) for x in zip(*parts))
    return PairProtocol(a.astype(np.int64), b.astype(np.int64), lab.astype(bool), fold.astype(np.int64))


def all_pairs(identities: np.ndarray, max_pairs: int = MAX_PAIRS) -> PairProtocol:
    """Every unordered pair of images (for the ROC); one fold.

    Raises:
        ValueError: more than ``max_pairs`` pairs (the message names ``dataset.roc_pairs=kfold``).
    """
    identities = np.asarray(identities)
    n = len(identities)
    if n * (n - 1) // 2 > max_pairs:
        raise ValueError(
            f"{n:,} images make {n * (n - 1) // 2:,} pairs, more than dataset.max_pairs={max_pairs:,}: set "
            "dataset.roc_pairs=kfold (the ROC over the k-fold pairs) or raise dataset.max_pairs"
        )
    a, b, gen = _pairs_within(np.arange(n), identities)
    return PairProtocol(a.astype(np.int64), b.astype(np.int64), gen, np.zeros(len(a), np.int64))

"""Data sets and verification protocols, built from a ``dataset`` config.

Readers: ``orl`` (fetched), ``folder`` (one folder per identity), ``lfw`` (``pairs.txt`` over
an image tree), ``bin`` (insightface verification ``.bin``), ``csv`` (``path1,path2,label``),
``rfw`` (one LFW pair list per group, :mod:`fetoolkit.data.rfw`). ``scores`` (score files, no
images) is read by :mod:`fetoolkit.data.scores` in its own job path.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fetoolkit.data.notes import is_utf8_name, log_records, printable_path
from fetoolkit.data.protocols import MAX_PAIRS, PairProtocol, all_pairs, check_budget, kfold_pairs, pair_budget
from fetoolkit.data.repeats import check_policy, protocol_repeats
from fetoolkit.data.sources import IdentityDataset, load_identity_folder, load_orl
from fetoolkit.hub import hash_images
from fetoolkit.templates import Templates

log = logging.getLogger(__name__)

DATASETS = ("orl", "folder", "lfw", "bin", "csv", "rfw", "ijbc", "ijbb", "scores")


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
        landmarks: float32 ``[N, 5, 2]`` given landmarks (IJB's meta file): crops are aligned from
            them, no detection; None: detect.
        templates: when set, the pairs compare templates (``kfold``/``roc`` index ``templates.ids``),
            not images (IJB-B/C); ``kfold`` is then None (the protocol has no folds).
        searches: 1:N protocols over the templates: ``{"G1": Search, "G2": Search, "probes": Search}``
            (IJB's galleries and mixed probes), or None.
    """

    name: str
    paths: list[Path]
    aligned: bool
    kfold: PairProtocol | None
    roc: PairProtocol
    images: Sequence[bytes] | None = None
    identities: np.ndarray | None = None
    identity_names: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    image_groups: dict[str, np.ndarray] | None = None
    landmarks: np.ndarray | None = None
    templates: Templates | None = None
    searches: dict[str, Any] | None = None

    def subject_names(self) -> np.ndarray | None:
        """object ``[N]``: each image's subject (its identity name, else the id as text); None when unknown."""
        if self.identities is None:
            return None
        if self.identity_names is not None:
            return np.asarray(self.identity_names, dtype=object)[self.identities]
        return self.identities.astype(str).astype(object)


def _identity_duplicates(
    paths: Sequence[Path], hashes: Sequence[str | None], identities: np.ndarray, names: Sequence[str]
) -> list[dict[str, str]]:
    """The same file (by sha256) under two identities or twice in one, as ``{path, reason}``."""
    by_hash: dict[str, list[int]] = {}
    for k, h in enumerate(hashes):
        if h is not None:
            by_hash.setdefault(h, []).append(k)
    duplicates = []
    for group in (g for g in by_hash.values() if len(g) > 1):
        first = group[0]
        for k in group[1:]:
            same = identities[k] == identities[first]
            who = (
                f"identity {names[identities[k]]}"
                if same
                else (f"identities {names[identities[first]]} and {names[identities[k]]}")
            )
            what = "a genuine pair of one photo" if same else "an impostor pair of one photo"
            duplicates.append({"path": str(paths[k]), "reason": f"the same file as {paths[first]} ({who}): {what}"})
    return duplicates


def _name_key(name: str) -> str:
    """What two identity names that mean one person share: the text without case or Unicode form."""
    return unicodedata.normalize("NFKC", name).casefold()


def case_twins(ds: IdentityDataset) -> list[dict[str, str]]:
    """Identity folders whose names differ only by case or Unicode form (``s1`` / ``S1``), as
    ``{path, reason}`` records (one per folder after the first of its name): two people by the
    labels, most likely one (a case-insensitive copy would merge them)."""
    root = Path(ds.meta.get("root", "."))
    first: dict[str, str] = {}
    out = []
    for name in ds.names:
        other = first.setdefault(_name_key(name), name)
        if other != name:
            out.append(
                {
                    "path": str(root / name),
                    "reason": f"identity folder {name} differs from {other} only by case or Unicode form: counted as "
                    "two people, so every pair of their photos is an impostor pair; merge or rename the folders "
                    "(dataset.strict=true refuses this)",
                }
            )
    return out


def hygiene(ds: IdentityDataset) -> dict[str, list[dict[str, str]]]:
    """What in an identity data set makes pairs that do not mean what their labels say, as
    ``{path, reason}`` records: the same file (by sha256) under two identities (an impostor pair
    of one photo) or twice in one (a genuine pair of one photo), identity names that differ only
    by case (:func:`case_twins`), and identities with one image (no genuine pair: impostor pairs
    only). The log gets the first few of each kind and a count."""
    names = ds.names or [str(i) for i in range(int(ds.identities.max()) + 1)]
    duplicates = _identity_duplicates(ds.paths, hash_images(ds.paths), ds.identities, names)
    counts = np.bincount(ds.identities)
    firsts = np.zeros(len(counts), np.int64)  # each identity's first image (one pass: 50,000 identities are quick)
    present, first_index = np.unique(ds.identities, return_index=True)
    firsts[present] = first_index
    single = [
        {
            "path": str(ds.paths[int(firsts[i])]),
            "reason": f"the only image of identity {names[i]}: no genuine pair, in impostor pairs only",
        }
        for i in np.flatnonzero(counts == 1)
    ]
    twins = case_twins(ds) if ds.names else []
    report = {"duplicates": duplicates, "identity_case": twins, "single_image_identities": single}
    for key, items in report.items():
        log_records(log, items, f"results.json data.hygiene.{key}")
    return report


def pair_hygiene(
    paths: Sequence[Path],
    pairs: PairProtocol,
    *,
    images: Sequence[bytes] | None = None,
    identities: np.ndarray | None = None,
    names: Sequence[str] | None = None,
) -> dict[str, list[dict[str, str]]]:
    """The hygiene report of a data set that lists its pairs (LFW, RFW, CSV, ``.bin``): pairs whose two
    sides are the same photo (by sha256: a genuine pair of one photo scores 1 by construction; an
    impostor pair of one photo is a labelling error), and, where identities are known, the same file
    under two identities. ``{path, reason}`` records, as :func:`hygiene`."""
    hashes = hash_images(paths, images)
    same = []
    for a, b, genuine in zip(pairs.idx_a.tolist(), pairs.idx_b.tolist(), pairs.labels.tolist()):
        if hashes[a] is not None and hashes[a] == hashes[b]:
            what = (
                "a genuine pair of one photo (cosine 1 by construction)"
                if genuine
                else "an impostor pair of one photo (a labelling error)"
            )
            where = str(paths[a]) if a == b else f"{paths[a]} and {paths[b]}"
            same.append({"path": where, "reason": f"the same photo on both sides: {what}"})
    duplicates: list[dict[str, str]] = []
    if identities is not None:
        labels = list(names) if names is not None else [str(i) for i in range(int(identities.max()) + 1)]
        duplicates = _identity_duplicates(paths, hashes, identities, labels)
    log_records(log, same, "results.json data.hygiene.same_photo_pairs")
    log_records(log, duplicates, "results.json data.hygiene.duplicates")
    return {"duplicates": duplicates, "same_photo_pairs": same}


def _strict_check(report: dict[str, list[dict[str, str]]], skipped: Sequence[dict[str, str]], strict: bool) -> None:
    """``dataset.strict=true``: refuse a data set with any hygiene record (but identities of one
    image), identity names that differ only by case, or skipped file."""
    found = [x for key in ("duplicates", "same_photo_pairs") for x in report.get(key, [])]
    twins = list(report.get("identity_case", []))
    if strict and (found or twins or skipped):
        first = (found + twins + list(skipped))[0]
        case = f", {len(twins)} identity names that differ only by case" if twins else ""
        raise ValueError(
            f"dataset.strict=true: {len(found)} duplicate images or same-photo pairs{case} and {len(skipped)} skipped "
            f"files (first: {first['path']}: {first['reason']}); fix the data or set dataset.strict=false to list them"
        )


def from_identities(
    ds: IdentityDataset,
    n_folds: int,
    seed: int,
    roc_pairs: str,
    *,
    strict: bool = False,
    max_pairs: int = MAX_PAIRS,
) -> EvalData:
    """Protocols generated from identity labels (ORL, identity folders).

    ``strict``: refuse a data set with duplicate images, identity names that differ only by case or
    skipped files (see :func:`hygiene`) instead of listing them in ``results.json`` (``data.hygiene``,
    ``data.skipped``) and ``summary.md``. ``max_pairs`` (``dataset.max_pairs``): the most pairs a
    protocol may hold or enumerate, checked from the identity counts before anything is read or made.
    """
    if roc_pairs not in ("all", "kfold"):
        raise ValueError(f"dataset.roc_pairs must be 'all' or 'kfold', got {roc_pairs!r}")
    check_budget(pair_budget(ds.identities, n_folds, seed), roc_pairs, max_pairs, f"dataset {ds.name}")
    report = hygiene(ds)
    _strict_check(report, ds.skipped, strict)
    kfold = kfold_pairs(ds.identities, n_folds=n_folds, seed=seed)
    roc = all_pairs(ds.identities, max_pairs) if roc_pairs == "all" else kfold
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
            "hygiene": report,
        },
    )


def _required(cfg: Any, key: str, what: str) -> Any:
    value = cfg.get(key)
    if value is None:
        raise ValueError(f"dataset={cfg.name} needs dataset.{key}: {what}")
    return value


def _utf8_paths(paths: Sequence[Path], what: str) -> None:
    """Refuse, before any work, an image path whose name is not valid UTF-8: results.json, pairs.parquet
    and summary.md record every path as UTF-8 text, and would fail after all the computation."""
    bad = [p for p in paths if not is_utf8_name(p)]
    if bad:
        raise ValueError(
            f"{what}: {len(bad)} image paths are not valid UTF-8 (first: {printable_path(bad[0])}); results.json, "
            "pairs.parquet and summary.md record every path as UTF-8 text: rename the files or folders "
            "(e.g. convmv -f latin1 -t utf-8 -r --notest DIR)"
        )


def load_eval_data(cfg: Any, seed: int = 0) -> EvalData:
    """Build ``EvalData`` from a ``dataset`` config node (``name`` picks the reader)."""
    data = _load_eval_data(cfg, seed)
    _utf8_paths(data.paths, f"dataset {data.name}")
    return data


def _load_eval_data(cfg: Any, seed: int) -> EvalData:
    name = cfg.name
    label = cfg.get("label") or name
    strict = bool(cfg.get("strict", False))
    dup = check_policy(str(cfg.get("duplicate_pairs") or "once"))
    max_pairs = int(cfg.get("max_pairs") or MAX_PAIRS)
    if name == "orl":
        orl = load_orl(cfg.get("root"))
        return from_identities(orl, cfg.n_folds, seed, cfg.roc_pairs, strict=strict, max_pairs=max_pairs)
    if name == "folder":
        root = _required(cfg, "root", "a folder with one sub-folder of images per identity")
        ds = load_identity_folder(root, name=label, aligned=bool(cfg.get("aligned", False)))
        return from_identities(ds, cfg.n_folds, seed, cfg.roc_pairs, strict=strict, max_pairs=max_pairs)
    if name == "lfw":
        from fetoolkit.data.lfw import load_lfw

        root = _required(cfg, "root", "the folder holding <Name>/<Name>_0001.jpg")
        pairs = _required(cfg, "pairs", "the pairs.txt file")
        s = load_lfw(root, pairs, ext=cfg.get("ext") or "jpg")
        listed, repeats = protocol_repeats(s.pairs, s.paths, policy=dup, source=str(pairs))
        report = pair_hygiene(s.paths, listed, identities=s.identities, names=s.names)
        _strict_check(report, [], strict)
        return EvalData(
            label,
            s.paths,
            bool(cfg.get("aligned", False)),
            listed,
            listed,
            identities=s.identities,
            identity_names=s.names,
            meta={
                "root": str(root),
                "pairs": str(pairs),
                "protocol": "pairs.txt sets as folds",
                "hygiene": report,
                "duplicate_pairs": repeats,
            },
        )
    if name == "bin":
        from fetoolkit.data.binset import load_bin

        path = Path(_required(cfg, "path", "an insightface verification file such as lfw.bin"))
        b = load_bin(path, n_folds=int(cfg.get("n_folds") or 10))
        labels = [Path(f"{path.name}#{k}") for k in range(len(b.images))]
        listed, repeats = protocol_repeats(b.pairs, labels, policy=dup, source=str(path))
        report = pair_hygiene(labels, listed, images=b.images)
        _strict_check(report, [], strict)
        return EvalData(
            cfg.get("label") or path.stem,
            labels,
            True,
            listed,
            listed,
            images=b.images,
            meta={
                "path": str(path),
                "n_encoded": b.n_encoded,
                "protocol": "consecutive pairs in 10 folds (insightface)",
                "hygiene": report,
                "duplicate_pairs": repeats,
            },
        )
    if name == "csv":
        from fetoolkit.data.csvpairs import load_pairs_csv

        path = _required(cfg, "path", "a CSV of path1,path2,label")
        c = load_pairs_csv(
            path, root=cfg.get("root"), n_folds=int(cfg.get("n_folds") or 10), seed=seed, duplicate_pairs=dup
        )
        report = pair_hygiene(c.paths, c.pairs)
        _strict_check(report, [], strict)
        return EvalData(
            label,
            c.paths,
            bool(cfg.get("aligned", False)),
            c.pairs,
            c.pairs,
            meta={"path": str(path), "protocol": "CSV pairs", "hygiene": report, "duplicate_pairs": c.repeats},
        )
    if name == "rfw":
        from fetoolkit.data.rfw import load_rfw

        root = _required(cfg, "root", "the folder holding txts/<G>/<G>_pairs.txt and data/<G>/")
        groups = list(cfg.get("groups") or []) or None
        paths, ids, names, pairs, image_group = load_rfw(root, groups, ext=cfg.get("ext") or "jpg")
        listed, repeats = protocol_repeats(pairs, paths, policy=dup, source=str(root))
        report = pair_hygiene(paths, listed, identities=ids, names=names)
        _strict_check(report, [], strict)
        return EvalData(
            label,
            paths,
            bool(cfg.get("aligned", False)),
            listed,
            listed,
            identities=ids,
            identity_names=names,
            meta={
                "root": str(root),
                "protocol": "one LFW pair list per group; sets as folds",
                "hygiene": report,
                "duplicate_pairs": repeats,
            },
            image_groups={"group": image_group},
        )
    if name in ("ijbc", "ijbb"):
        from fetoolkit.data.ijb import load_ijb

        root = _required(cfg, "root", f"the folder holding meta/{name}_face_tid_mid.txt and loose_crop/")
        ij = load_ijb(root, name)
        searches = {**ij.galleries, "probes": ij.probes} if ij.probes is not None else None
        return EvalData(
            label,
            ij.paths,
            False,
            None,
            ij.pairs,
            meta=ij.meta,
            landmarks=ij.landmarks,
            templates=ij.templates,
            searches=searches,
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

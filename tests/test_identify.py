"""1:N identification and the flip test on ORL's real faces, against brute-force references."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from fetoolkit.eval_run import run
from fetoolkit.identify import IdentificationCfg, subject_identification, subject_split

REPO = Path(__file__).resolve().parents[1]


def compose_eval(overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose("eval", overrides=overrides)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _brute_closed_set(emb, ids, gallery_mask, subjects, distractors=None):
    """Rank-1 and rank-5 by a full score matrix: gallery = mean of each subject's enrolled features."""
    g = _unit(np.stack([emb[gallery_mask & (ids == s)].astype(np.float64).sum(0) for s in subjects]))
    probe = ~gallery_mask
    s = emb[probe].astype(np.float64) @ g.T
    mate = s[np.arange(probe.sum()), np.searchsorted(subjects, ids[probe])]
    others = (s > mate[:, None]).sum(1) + ((s == mate[:, None]).sum(1) - 1)  # ties count against the mate
    if distractors is not None:
        d = emb[probe].astype(np.float64) @ distractors.T.astype(np.float64)
        others = others + (d >= mate[:, None]).sum(1)
    return float((others == 0).mean()), float((others < 5).mean())


def test_closed_set_identification_matches_brute_force(orl_embedded) -> None:
    data, es = orl_embedded
    emb = es.normalized()
    cfg = IdentificationCfg(gallery_per_subject=3, seed=1)
    got = subject_identification(emb, es.ok, data.identities, cfg, None).summary["gallery"]
    mask, subjects = subject_split(data.identities, es.ok, 3, 1)
    assert mask.sum() == 120 and (np.bincount(data.identities[mask]) == 3).all()
    r1, r5 = _brute_closed_set(emb, data.identities, mask, subjects)
    assert (got["n_mated"], got["n_nonmated"]) == (280, 0)
    assert got["rank1"] == pytest.approx(r1, abs=1e-12) and got["rank5"] == pytest.approx(r5, abs=1e-12)
    assert 0.9 < got["rank1"] <= 1.0  # ORL with arcface: nearly every probe finds its subject


def test_distractors_lower_rank1_as_a_brute_force_search_says(orl_embedded) -> None:
    data, es = orl_embedded
    emb = es.normalized()
    keep = data.identities < 30  # subjects s1..s30 enrolled and probing; s31..s40 are distractors
    distractors = emb[~keep]
    ids = data.identities[keep]
    cfg = IdentificationCfg(gallery_per_subject=1, seed=0)
    got = subject_identification(emb[keep], es.ok[keep], ids, cfg, distractors).summary
    curve = got["distractors"]["rank1"]
    assert list(curve) == ["10", "100"]
    mask, subjects = subject_split(ids, es.ok[keep], 1, 0)
    want_100 = _brute_closed_set(emb[keep], ids, mask, subjects, distractors)[0]
    assert curve["100"] == pytest.approx(want_100, abs=1e-12)
    assert got["gallery"]["rank1"] >= curve["10"] >= curve["100"]


@pytest.fixture(scope="module")
def flip_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("flip")
    cfg = compose_eval(
        [
            "model=arcface",
            "dataset=orl",
            "pipeline.flip_test=true",
            "identification.gallery_per_subject=3",
            "stats.n_boot=0",
            "pipeline.progress=false",
        ]
    )
    return out, run(cfg, out)


def test_flip_test_sums_the_mirrored_crop_before_normalising(orl_embedded, flip_run) -> None:
    data, es = orl_embedded
    out, summary = flip_run
    assert summary["comparison"] == {"unit": "image", "flip_test": True}
    df = pd.read_parquet(out / "pairs.parquet")
    df = df[df["protocol"] != "kfold"]
    f = _unit(es.raw.astype(np.float64) + es.raw_flip)
    want = np.einsum("ij,ij->i", f[df["idx_a"]], f[df["idx_b"]])
    assert np.abs(df["score"].to_numpy() - want).max() < 1e-5
    plain = np.einsum("ij,ij->i", *(_unit(es.raw.astype(np.float64))[df[c]] for c in ("idx_a", "idx_b")))
    assert np.abs(plain - want).max() > 1e-3  # the flip test changes the scores
    saved = json.loads((out / "results.json").read_text())
    assert saved["identification"]["gallery"]["n_mated"] == 280
    assert (out / "cmc.png").stat().st_size > 1000 and not (out / "dir.png").exists()  # closed set: no DIR


def test_identification_needs_identities_and_a_gallery() -> None:
    cfg = compose_eval(["dataset=orl", "identification.distractors=/tmp"])
    with pytest.raises(ValueError, match="needs identification.gallery_per_subject"):
        run(cfg, None)


def test_distractor_folder_through_the_eval(tmp_path: Path) -> None:
    """identification.distractors=DIR: the wild photos detected, aligned and embedded by the run's
    pipeline join the ORL gallery as subjects of their own."""
    import shutil

    from fetoolkit.data.wild import load_wild

    folder = tmp_path / "distractors"
    folder.mkdir()
    for name, path in load_wild().items():
        shutil.copy(path, folder / name)
    cfg = compose_eval(
        [
            "model=arcface",
            "dataset=orl",
            "identification.gallery_per_subject=3",
            f"identification.distractors={folder}",
            "stats.n_boot=50",
            "pipeline.progress=false",
        ]
    )
    ident = run(cfg, tmp_path / "run")["identification"]
    assert ident["distractors"]["n"] == 4 and list(ident["distractors"]["rank1"]) == ["4"]
    assert ident["distractors"]["rank1"]["4"] <= ident["gallery"]["rank1"]
    lo, hi = ident["gallery"]["rank1_ci"]
    assert lo <= ident["gallery"]["rank1"] <= hi
    assert "## 1:N identification" in (tmp_path / "run" / "summary.md").read_text()

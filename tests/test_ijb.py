"""IJB-C templates and 1:N on real faces: ORL and the in-the-wild photos written into insightface's
IJB layout.

83 templates: two per ORL subject (five photos each, some photos sharing a media id) and three of
the wild photos (Obama's two photos, his third, Biden's); the landmarks of the project's own MTCNN
in the 5-point meta file; every template pair in the pair list; galleries G1 (ORL subjects 1-20 and
Obama) and G2 (21-40), probed by the other template of every subject and Biden's. The figures are
checked against an independent computation: insightface's template rule written as loops over the
run's own per-image features, scikit-learn's ROC, and a brute-force 1:N search.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from fetoolkit.data.ijb import IjbError, load_ijb
from fetoolkit.eval_run import run
from fetoolkit.templates import TemplateCfg, Templates, template_features

REPO = Path(__file__).resolve().parents[1]


def compose_eval(overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose("eval", overrides=overrides)


def _media_of(k: int) -> int:
    """Media index of photo k (0..4) inside its template: photos 0+1 one media, 2 alone, 3+4 one."""
    return {0: 0, 1: 0, 2: 1, 3: 2, 4: 2}[k]


#: The wild photos as three more templates: Obama's two photos (two media) in G1, his third photo and
#: Biden's as probes (Obama's mated in G1, non-mated in G2; Biden's non-mated in both).
WILD_LAYOUT = {"obama.jpg": (180, 5040, "G1"), "obama2.jpg": (180, 5040, "G1"), "obama3.jpg": (181, 5040, "probe"),
               "biden.jpg": (182, 5041, "probe")}  # fmt: skip


@pytest.fixture(scope="module")
def ijb_layout(orl_embedded, detector) -> list[dict]:
    """One row per image of the written IJB set, in the order of its face_tid_mid file: source file,
    name, template, media, subject, 1:N side, landmarks (MTCNN's, in the image's pixels), faceness."""
    from fetoolkit.data.wild import load_wild
    from fetoolkit.pipeline import PipelineCfg, crop_images

    data, es = orl_embedded
    rows = []
    for i, path in enumerate(data.paths):
        s, n = int(data.identities[i]), int(path.stem) - 1  # ORL: s<k>/<1..10>.pgm
        tid = 100 + 2 * s + (n >= 5)
        side = "probe" if n >= 5 else ("G1" if s < 20 else "G2")
        rows.append(
            {"src": path, "name": f"{s + 1}_{n + 1}.png", "tid": tid, "mid": 1000 + 10 * tid + _media_of(n % 5),
             "subject": 5000 + s, "side": side, "landmarks": es.landmarks[i], "score": float(es.det_scores[i])}
        )  # fmt: skip
    wild = load_wild()
    names = sorted(WILD_LAYOUT)
    crops = crop_images([wild[n] for n in names], detector, PipelineCfg(progress=False))
    assert crops.ok.all(), crops.failures
    for k, n in enumerate(names):
        tid, subject, side = WILD_LAYOUT[n]
        rows.append(
            {"src": wild[n], "name": n, "tid": tid, "mid": 9000 + k, "subject": subject, "side": side,
             "landmarks": crops.landmarks[k], "score": float(crops.det_scores[k])}
        )  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def ijb_root(ijb_layout, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import shutil

    root = tmp_path_factory.mktemp("ijbc")
    (root / "loose_crop").mkdir()
    (root / "meta").mkdir()
    tid_lines, lm_lines = [], []
    g_rows: dict[str, list[str]] = {"G1": [], "G2": [], "probe": []}
    for r in ijb_layout:
        if r["src"].suffix == ".pgm":
            Image.open(r["src"]).save(root / "loose_crop" / r["name"])  # lossless PNG: the same pixels
        else:
            shutil.copy(r["src"], root / "loose_crop" / r["name"])  # the JPEG as it is
        tid_lines.append(f"{r['name']} {r['tid']} {r['mid']}")
        pts = " ".join(f"{v:.9g}" for v in r["landmarks"].reshape(-1))
        lm_lines.append(f"{r['name']} {pts} {r['score']:.9g}")
        g_rows[r["side"]].append(f"{r['tid']},{r['subject']},{r['name']}")
    order = np.random.default_rng(0).permutation(len(tid_lines))  # the two files in different orders
    (root / "meta/ijbc_face_tid_mid.txt").write_text("\n".join(tid_lines) + "\n")
    (root / "meta/ijbc_name_5pts_score.txt").write_text("\n".join(lm_lines[k] for k in order) + "\n")
    subject = {r["tid"]: r["subject"] for r in ijb_layout}
    tids = sorted(subject)
    pairs = [f"{a} {b} {int(subject[a] == subject[b])}" for i, a in enumerate(tids) for b in tids[i + 1 :]]
    (root / "meta/ijbc_template_pair_label.txt").write_text("\n".join(pairs) + "\n")
    for side, lines in g_rows.items():
        fname = f"ijbc_1N_gallery_{side}.csv" if side != "probe" else "ijbc_1N_probe_mixed.csv"
        (root / "meta" / fname).write_text("TEMPLATE_ID,SUBJECT_ID,FILENAME\n" + "\n".join(lines) + "\n")
    return root


def reference_templates(
    raw: np.ndarray, raw_flip: np.ndarray, faceness: np.ndarray, tids: np.ndarray, mids: np.ndarray, cfg: TemplateCfg
) -> dict[int, np.ndarray]:
    """insightface's image2template_feature, as loops: template id -> normalised feature (float64)."""
    x = raw.astype(np.float64) + (raw_flip if cfg.flip else 0.0)
    if cfg.normalize_images:
        x = x / np.sqrt((x**2).sum(-1, keepdims=True))
    if cfg.faceness_weight:
        x = x * faceness[:, None]
    out = {}
    for t in np.unique(tids):
        rows = np.flatnonzero(tids == t)
        medias = []
        for m in np.unique(mids[rows]):
            r = rows[mids[rows] == m]
            medias.append(x[r[0]] if len(r) == 1 else x[r].mean(axis=0))
        f = np.sum(medias, axis=0)
        out[int(t)] = f / np.linalg.norm(f)
    return out


def _orl_layout(data, es):
    tids = np.array([100 + 2 * int(data.identities[i]) + (int(p.stem) > 5) for i, p in enumerate(data.paths)])
    mids = np.array([1000 + 10 * t + _media_of((int(p.stem) - 1) % 5) for t, p in zip(tids, data.paths)])
    return tids, mids


@pytest.mark.parametrize("flip", [True, False])
@pytest.mark.parametrize("norm", [True, False])
@pytest.mark.parametrize("faceness", [True, False])
def test_template_features_follow_insightface(orl_embedded, flip: bool, norm: bool, faceness: bool) -> None:
    data, es = orl_embedded
    tids, mids = _orl_layout(data, es)
    ids, inv = np.unique(tids, return_inverse=True)
    cfg = TemplateCfg(flip, norm, faceness)
    t = Templates(inv.astype(np.int64), mids.astype(np.int64), ids, es.det_scores.astype(np.float32))
    feats, ok = template_features(es.raw, es.raw_flip, es.ok, t, cfg)
    ref = reference_templates(es.raw, es.raw_flip, es.det_scores.astype(np.float64), tids, mids, cfg)
    assert ok.all()
    got = {int(i): feats[k] for k, i in enumerate(ids)}
    assert max(np.abs(got[i] - ref[i]).max() for i in ref) < 1e-5
    # the flags matter: F off vs on moves the features
    if flip:
        other, _ = template_features(es.raw, es.raw_flip, es.ok, t, TemplateCfg(False, norm, faceness))
        assert np.abs(other - feats).max() > 1e-3


def test_template_of_failed_images_is_marked() -> None:
    raw = np.ones((4, 3), np.float32)
    t = Templates(np.array([0, 0, 1, 1]), np.array([0, 1, 2, 2]), np.array([7, 8]))
    feats, ok = template_features(raw, None, np.array([True, True, False, False]), t, TemplateCfg(flip=False))
    assert ok.tolist() == [True, False]
    assert np.isnan(feats[1]).all() and np.allclose(feats[0], 1 / np.sqrt(3))


@pytest.fixture(scope="module")
def ijb_run(ijb_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """The IJB-C eval run (folder, results) and the per-image features it computed (read back from the
    embedding cache by a second evaluation of the same set: a cache hit)."""
    from fetoolkit.cache import CacheCfg
    from fetoolkit.data import load_eval_data
    from fetoolkit.evaluate import evaluate
    from fetoolkit.figures import StatsCfg
    from fetoolkit.models.factory import create_embedder
    from fetoolkit.pipeline import PipelineCfg

    out = tmp_path_factory.mktemp("ijb_run")
    cfg = compose_eval(
        ["model=arcface", "dataset=ijbc", f"dataset.root={ijb_root}", "stats.n_boot=200", "pipeline.progress=false"]
    )
    summary = run(cfg, out)
    again = evaluate(
        load_eval_data(cfg.dataset),
        create_embedder("arcface"),
        pipeline=PipelineCfg(progress=False),
        cache=CacheCfg().open(),
        stats=StatsCfg(n_boot=0),
    )
    assert again.embedded.cache == "hit"
    return out, summary, again.embedded


def _reference(ijb_layout, es) -> dict[int, np.ndarray]:
    tids = np.array([r["tid"] for r in ijb_layout])
    mids = np.array([r["mid"] for r in ijb_layout])
    faceness = np.array([r["score"] for r in ijb_layout])
    return reference_templates(es.raw, es.raw_flip, faceness, tids, mids, TemplateCfg())  # F on, N off, D off


def test_landmarks_from_the_meta_file_give_the_detector_pipelines_crops(orl_embedded, ijb_run) -> None:
    """ORL's photos aligned from the written landmarks embed as the MTCNN pipeline's crops did."""
    _, es_orl = orl_embedded
    _, _, es = ijb_run
    a, b = es.normalized()[:400], es_orl.normalized()
    assert es.ok.all() and float(np.einsum("ij,ij->i", a, b).min()) > 0.9999


def test_ijbc_template_scores_and_tar_match_an_independent_computation(ijb_layout, ijb_run) -> None:
    from sklearn.metrics import roc_auc_score, roc_curve

    out, summary, es = ijb_run
    assert json.loads((out / "results.json").read_text())["complete"] is True
    df = pd.read_parquet(out / "pairs.parquet")
    assert {"template1", "template2", "label", "score"} <= set(df.columns)
    assert len(df) == 83 * 82 // 2 and int(df["label"].sum()) == 41
    ref = _reference(ijb_layout, es)
    want = np.array([ref[a] @ ref[b] for a, b in zip(df["template1"], df["template2"])])
    assert np.abs(df["score"].to_numpy() - want).max() < 2e-3
    assert summary["comparison"]["unit"] == "template" and summary["comparison"]["code"] == "F"
    assert summary["n_genuine"] == 41 and summary["n_impostor"] == 3362
    assert "accuracy_mean" not in summary  # no folds in the IJB protocol

    y = df["label"].to_numpy()
    fpr, tpr, _ = roc_curve(y, want)
    for key, far in (("1e-1", 0.1), ("1e-2", 0.01), ("1e-3", 1e-3)):
        ref_tar = tpr[fpr <= far + 1e-12].max()  # the ROC point of largest FAR <= target
        assert summary["tar_at_far_decades"][key] == pytest.approx(ref_tar, abs=1e-12), key
        assert summary["achieved_far"][key] <= far
    assert "1e-4" not in summary["tar_at_far_decades"]  # 3362 impostors cannot measure 1e-4
    assert summary["auc"] == pytest.approx(roc_auc_score(y, want), abs=1e-6)


def _brute_identification(g: np.ndarray, gs: np.ndarray, p: np.ndarray, ps: np.ndarray, fpir: float):
    """Rank-1 of the mated probes and TPIR at one FPIR (bob.measure: accepted at >= the threshold), by a
    full score matrix."""
    s = p @ g.T
    top = s.argmax(axis=1)
    mated = np.isin(ps, gs)
    rank1 = float((gs[top][mated] == ps[mated]).mean())
    nm_top = np.sort(s[~mated].max(axis=1))[::-1]
    thr = nm_top[max(int(len(nm_top) * fpir) - 1, 0)]
    hit = (gs[top] == ps) & (s.max(axis=1) >= thr)
    return rank1, float(hit[mated].mean()), int(mated.sum()), int((~mated).sum())


def test_ijbc_1n_matches_a_brute_force_search(ijb_layout, ijb_run) -> None:
    _, summary, es = ijb_run
    ref = _reference(ijb_layout, es)
    side = {r["tid"]: (r["side"], r["subject"]) for r in ijb_layout}
    ident = summary["identification"]
    probe_t = [t for t, (sd, _) in side.items() if sd == "probe"]
    p = np.stack([ref[t] for t in probe_t])
    ps = np.array([side[t][1] for t in probe_t])
    expected_counts = {"G1": (21, 21), "G2": (20, 22)}  # Obama enrolled in G1; Biden in neither
    for name in ("G1", "G2"):
        gt = [t for t, (sd, _) in side.items() if sd == name]
        g = np.stack([ref[t] for t in gt])
        rank1, tpir, n_mated, n_nonmated = _brute_identification(g, np.array([side[t][1] for t in gt]), p, ps, 0.1)
        got = ident[name]
        assert (got["n_mated"], got["n_nonmated"]) == (n_mated, n_nonmated) == expected_counts[name]
        assert got["rank1"] == pytest.approx(rank1, abs=1e-12)
        assert got["tpir_at_fpir"]["1e-1"] == pytest.approx(tpir, abs=1e-12)
        assert "1e-2" not in got["tpir_at_fpir"] or got["tpir_at_fpir"]["1e-2"] is None  # ~20 non-mated searches
        lo, hi = got["rank1_ci"]
        assert lo <= got["rank1"] <= hi
    assert ident["mean"]["rank1"] == pytest.approx((ident["G1"]["rank1"] + ident["G2"]["rank1"]) / 2)


def test_ijbc_run_writes_identification_plots(ijb_run) -> None:
    out, _, _ = ijb_run
    for name in ("roc.png", "det.png", "cmc.png", "dir.png", "summary.md"):
        assert (out / name).stat().st_size > 1000, name


def test_ijb_reader_names_file_and_line(ijb_root: Path, tmp_path: Path) -> None:
    import shutil

    bad = tmp_path / "ijbc"
    shutil.copytree(ijb_root / "meta", bad / "meta")
    (bad / "loose_crop").mkdir()
    lines = (bad / "meta/ijbc_template_pair_label.txt").read_text().splitlines()
    lines[6] = "100 x 1"
    (bad / "meta/ijbc_template_pair_label.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(IjbError, match=r"ijbc_template_pair_label.txt, line 7: field 2 is 'x'"):
        load_ijb(bad)
    lines[6] = "100 99999 1"
    (bad / "meta/ijbc_template_pair_label.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(IjbError, match=r"line 7: template 99999 has no image"):
        load_ijb(bad)
    (bad / "meta/ijbc_name_5pts_score.txt").write_text("1_1.png 1 2 3\n")
    with pytest.raises(IjbError, match=r"ijbc_name_5pts_score.txt: 4 fields per line"):
        load_ijb(bad)
    (bad / "meta/ijbc_1N_gallery_G2.csv").unlink()
    shutil.copy(ijb_root / "meta/ijbc_name_5pts_score.txt", bad / "meta/ijbc_name_5pts_score.txt")
    shutil.copy(ijb_root / "meta/ijbc_template_pair_label.txt", bad / "meta/ijbc_template_pair_label.txt")
    with pytest.raises(IjbError, match=r"missing ijbc_1N_gallery_G2.csv"):
        load_ijb(bad)
    with pytest.raises(IjbError, match=r"loose_crop: missing"):
        load_ijb(tmp_path / "nowhere")


def test_template_pair_scores_dense_and_sparse_paths_agree() -> None:
    from fetoolkit.templates import pair_dots, template_pair_scores

    rng = np.random.default_rng(3)
    feats = rng.standard_normal((5000, 64)).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    feats[17] = np.nan  # a template without an enrolled image
    a, b = rng.integers(0, 5000, 200_000), rng.integers(0, 5000, 200_000)  # dense: the Gram blocks
    want = np.einsum("ij,ij->i", feats[a].astype(np.float64), feats[b].astype(np.float64))
    got = template_pair_scores(feats, a, b, block=700)
    assert np.array_equal(np.isnan(got), np.isnan(want)) and np.isnan(got).any()
    fin = ~np.isnan(want)
    assert np.abs(got[fin] - want[fin]).max() < 1e-5
    sparse = template_pair_scores(feats, a[:50], b[:50])  # sparse: gathered pairs
    assert np.array_equal(sparse, pair_dots(feats, a[:50], b[:50]), equal_nan=True)


def _ablation(ijb_root: Path, out: Path, sweep: list[str]) -> pd.DataFrame:
    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fetoolkit.eval",
            "-m",
            "model=arcface",
            "dataset=ijbc",
            f"dataset.root={ijb_root}",
            "stats.n_boot=0",
            "pipeline.progress=false",
            f"hydra.sweep.dir={out}",
            *sweep,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"sweep folder: {out.resolve()}" in proc.stdout + proc.stderr  # said before the first run
    md = (out / "comparison.md").read_text()
    assert md.count("## ijbc") == 1  # one table: every run scored the same template pairs
    return pd.read_csv(out / "comparison.csv")


@pytest.mark.slow
def test_flip_ablation_sweep_is_one_paired_table(ijb_root: Path, tmp_path: Path) -> None:
    df = _ablation(ijb_root, tmp_path, ["pipeline.flip_test=true,false"])
    assert sorted(df["features"]) == ["template F", "template none"]
    paired = pd.read_csv(tmp_path / "comparison_paired.csv")
    assert len(paired) == 1 and bool(paired["paired"].iloc[0]), paired.to_dict("records")


@pytest.mark.slow
def test_fnd_ablation_is_eight_runs_in_one_table(ijb_root: Path, tmp_path: Path) -> None:
    df = _ablation(
        ijb_root,
        tmp_path,
        ["pipeline.flip_test=true,false", "dataset.normalize_images=true,false", "dataset.faceness_weight=true,false"],
    )
    assert sorted(df["features"]) == sorted(
        f"template {c}" for c in ("F+N+D", "F+N", "F+D", "F", "N+D", "N", "D", "none")
    )
    assert df["eer"].notna().all() and df["rank1"].notna().all()

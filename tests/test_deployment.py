"""The deployment report on real ORL scores: bob files that reproduce the run, dev/eval thresholds and
per-group rates equal to independent computations, the heatmap and the report; RFW-style layouts."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _bob_reference import bob_minimizing_threshold
from PIL import Image

from fetoolkit.data.scores import load_scores
from fetoolkit.deployment import ThresholdCfg, deployment

REPO = Path(__file__).resolve().parents[1]
FAR = 1e-3


def _eval(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "fetoolkit.eval", *args], capture_output=True, text=True, cwd=REPO, timeout=900
    )
    return proc


def _ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.fixture(scope="module")
def group_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ORL has no demographics: two made-up attributes over its 40 subjects (stand-in groups)."""
    path = tmp_path_factory.mktemp("groups") / "orl_groups.csv"
    rows = ["subject,band,parity"] + [
        f"s{k},{'A' if k <= 20 else 'B'},{'odd' if k % 2 else 'even'}" for k in range(1, 41)
    ]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def orl_run(tmp_path_factory: pytest.TempPathFactory, group_file: Path) -> Path:
    out = tmp_path_factory.mktemp("orl_groups_run")
    _ok(_eval("model=arcface", "dataset=orl", f"groups={group_file}", "stats.n_boot=200", f"hydra.run.dir={out}"))
    return out


def _pairs(run: Path) -> pd.DataFrame:
    return pd.read_parquet(run / "pairs.parquet")


def _thresholds(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Independent: every distinct score and +inf, with FAR and FRR by direct comparison."""
    cand = np.concatenate([np.unique(s), [np.inf]])
    far = (s[~y][None, :] >= cand[:, None]).mean(axis=1)
    frr = (s[y][None, :] < cand[:, None]).mean(axis=1)
    return cand, far, frr


def _reference_threshold(s: np.ndarray, y: np.ndarray, criterion: str, far_target: float = FAR) -> float:
    """far: the issue's rule by direct comparison; eer / min_hter: bob.measure's search (reference)."""
    if criterion == "far":
        cand, far, _ = _thresholds(s, y)
        return float(cand[far <= far_target + 1e-12].min())
    cost = (lambda fa, fr: abs(fa - fr)) if criterion == "eer" else (lambda fa, fr: (fa + fr) / 2)
    return bob_minimizing_threshold(s[~y], s[y], cost)


def test_bob_file_reproduces_the_run(orl_run: Path, tmp_path: Path) -> None:
    bob = tmp_path / "orl.txt"
    proc = subprocess.run(
        [sys.executable, "-m", "fetoolkit.data.export", "--scores", str(orl_run), "--bob", str(bob)],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    first = bob.read_text().splitlines()[0].split()
    assert len(first) == 4 and first[0] == first[1]  # genuine first: claimed_id == real_id
    out = tmp_path / "run"
    _ok(_eval("dataset=scores", f"dataset.path={bob}", "stats.n_boot=200", f"hydra.run.dir={out}"))
    a = json.loads((orl_run / "results.json").read_text())
    b = json.loads((out / "results.json").read_text())
    for key in ("eer", "eer_threshold", "auc", "tar_at_far", "tar_at_far_decades", "threshold_at_far", "eer_ci"):
        assert b[key] == a[key], key
    assert (b["n_genuine"], b["n_impostor"]) == (a["n_genuine"], a["n_impostor"]) == (1800, 78000)
    assert b["backend"] == "scores" and b["data"]["scores"]["format"] == "bob4"
    # the scores run's own pair table is a score file too, with the same comparisons
    again = load_scores(out)
    src = _pairs(orl_run)
    roc = src[src["protocol"].astype(str).str.contains("roc")]
    assert np.array_equal(np.sort(again.roc.scores), np.sort(roc["score"].to_numpy()))


def test_run_pairs_parquet_is_a_score_file_with_folds(orl_run: Path) -> None:
    s = load_scores(orl_run)
    r = json.loads((orl_run / "results.json").read_text())
    assert s.meta["pairs_table"] == "eval run" and s.meta["run"]["model"] == "arcface_mbf.sirius"
    assert len(s.roc) == r["n_genuine"] + r["n_impostor"] and s.roc.has_subjects
    assert s.kfold is not None and len(np.unique(s.kfold_folds)) == 10
    assert s.kfold.n_genuine == r["kfold"]["n_genuine"]


@pytest.fixture(scope="module")
def dev_eval_files(orl_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("deveval")
    from fetoolkit.data.export import export_scores

    return (
        export_scores(orl_run, d / "dev.txt", folds="1-5"),
        export_scores(orl_run, d / "eval.txt", columns=5, folds="6-10"),
    )


def _fold_halves(run: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    df = _pairs(run)
    kf = df[df["protocol"].astype(str).str.contains("kfold")]
    return kf[kf["fold"] < 5], kf[kf["fold"] >= 5]


def test_dev_eval_run_equals_independent_computation(
    orl_run: Path, dev_eval_files: tuple[Path, Path], tmp_path
) -> None:
    dev_f, eval_f = dev_eval_files
    _ok(
        _eval(
            "dataset=scores", f"dataset.dev={dev_f}", f"dataset.eval={eval_f}", "threshold.criterion=min_hter",
            "stats.n_boot=200", f"hydra.run.dir={tmp_path}",
        )
    )  # fmt: skip
    r = json.loads((tmp_path / "results.json").read_text())
    dev, ev = _fold_halves(orl_run)
    ds, dy = dev["score"].to_numpy(), dev["label"].to_numpy(bool)
    es, ey = ev["score"].to_numpy(), ev["label"].to_numpy(bool)
    t = _reference_threshold(ds, dy, "min_hter")
    de = r["dev_eval"]
    assert de["criterion"] == "min_hter" and de["threshold"] == pytest.approx(t, abs=1e-12)
    fmr, fnmr = float((es[~ey] >= t).mean()), float((es[ey] < t).mean())
    assert de["eval"]["fmr"] == pytest.approx(fmr) and de["eval"]["fnmr"] == pytest.approx(fnmr)
    assert de["eval"]["hter"] == pytest.approx((fmr + fnmr) / 2)
    assert (de["eval"]["n_genuine"], de["eval"]["n_impostor"]) == (int(ey.sum()), int((~ey).sum()))
    assert de["eval"]["interval_method"] == "subject" and de["eval"]["n_subjects"] == 20
    lo, hi = de["eval"]["hter_ci"]
    assert lo <= de["eval"]["hter"] <= hi
    assert len(de["epc"]["alpha"]) == 51 and (tmp_path / "epc.png").stat().st_size > 5000
    assert "Dev / eval" in (tmp_path / "report.md").read_text()
    # the other criteria, through the library on the same files
    dev_s, eval_s = load_scores(dev_f), load_scores(eval_f)
    for crit in ("eer", "far"):
        d = deployment(eval_s.roc, threshold=ThresholdCfg(criterion=crit, far=1e-2), dev=dev_s.roc)
        assert d.summary["dev_eval"]["threshold"] == pytest.approx(_reference_threshold(ds, dy, crit, 1e-2), abs=1e-12)


def test_group_rates_equal_independent_computation(orl_run: Path, group_file: Path) -> None:
    r = json.loads((orl_run / "results.json").read_text())
    g = r["groups"]
    df = _pairs(orl_run)
    roc = df[df["protocol"].astype(str).str.contains("roc") & df["enrolled"]]
    s, y = roc["score"].to_numpy(), roc["label"].to_numpy(bool)
    t = _reference_threshold(s, y, "far")
    assert g["threshold"] == t and g["far"] == FAR
    groups = pd.read_csv(group_file).set_index("subject")
    for attr in ("band", "parity"):
        ga = roc["subject_a"].map(groups[attr]).to_numpy()
        gb = roc["subject_b"].map(groups[attr]).to_numpy()
        rates = {}
        for v in sorted(set(ga)):
            within = (ga == v) & (gb == v)
            gen, imp = within & y, within & ~y
            want = {
                "n_genuine": int(gen.sum()),
                "n_impostor": int(imp.sum()),
                "fnmr": float((s[gen] < t).mean()),
                "fmr": float((s[imp] >= t).mean()),
            }
            got = g["attributes"][attr][v]
            for k, val in want.items():
                assert got[k] == pytest.approx(val), (attr, v, k)
            rates[v] = want
            other = [w for w in set(gb) if w != v][0]
            across = ~y & (((ga == v) & (gb == other)) | ((ga == other) & (gb == v)))
            cell = g["differentials"][attr]["cross_fmr"][v][other]
            assert cell["n_impostor"] == int(across.sum())
            assert cell["fmr"] == pytest.approx(float((s[across] >= t).mean()))
            assert g["differentials"][attr]["cross_fmr"][v][v]["fmr"] == pytest.approx(want["fmr"])
        fm = [x["fmr"] for x in rates.values()]
        fn = [x["fnmr"] for x in rates.values()]
        fdr = 1 - (0.5 * (max(fm) - min(fm)) + 0.5 * (max(fn) - min(fn)))
        assert g["differentials"][attr]["fdr"] == pytest.approx(fdr)
        d = g["differentials"][attr]
        for key, r in (("fmr_max_min", fm), ("fnmr_max_min", fn)):
            if min(r) > 0:
                assert d[key] == pytest.approx(max(r) / min(r)), (attr, key)
            else:
                assert d[key] is None and "smallest rate is 0" in d[f"{key}_reason"]
        heat = Image.open(orl_run / f"groups_{attr}_fmr.png")
        assert heat.size[0] > 300 and len(np.unique(np.asarray(heat.convert("L")))) > 20  # drawn, not blank
        assert (orl_run / f"groups_{attr}_det.png").stat().st_size > 5000
    report = (orl_run / "report.md").read_text()
    html = (orl_run / "report.html").read_text()
    assert "Demographic differentials" in report and "Attribute `band`" in report and "groups_band_fmr.png" in report
    assert "<table>" in html and "http" not in html.replace('lang="en"', "")


def test_image_keyed_group_file_matches_path_tails(orl_run: Path, group_file: Path, tmp_path: Path) -> None:
    """The same groups keyed by image (``s12/3.pgm``) instead of subject give the same figures."""
    subj = pd.read_csv(group_file).set_index("subject")
    pairs = load_scores(orl_run).roc
    images = sorted(set(pairs.item_a) | set(pairs.item_b))
    rows = ["image,band"] + [
        f"{Path(p).parent.name}/{Path(p).name},{subj.loc[Path(p).parent.name, 'band']}" for p in images
    ]
    (tmp_path / "img.csv").write_text("\n".join(rows) + "\n")
    from fetoolkit.data.groups import load_groups

    by_image = deployment(pairs, groups=load_groups(tmp_path / "img.csv")).summary["groups"]
    by_subject = deployment(pairs, groups=load_groups(group_file)).summary["groups"]
    assert by_image["attributes"]["band"] == by_subject["attributes"]["band"]
    assert by_image["differentials"]["band"]["n_unknown"] == 0


def test_small_groups_report_counts_not_rates(orl_run: Path, tmp_path: Path) -> None:
    (tmp_path / "g.csv").write_text("subject,site\ns1,tiny\ns2,tiny\n" + "".join(f"s{k},big\n" for k in range(3, 41)))
    from fetoolkit.data.groups import load_groups

    g = deployment(load_scores(orl_run).roc, groups=load_groups(tmp_path / "g.csv")).summary["groups"]
    tiny = g["attributes"]["site"]["tiny"]
    assert tiny["n_impostor"] == 100 and tiny["n_genuine"] == 90  # s1 x s2 images; 2 x 45 genuine
    big = g["attributes"]["site"]["big"]
    assert big["fmr"] is not None and big["fnmr"] is not None
    (tmp_path / "g2.csv").write_text("subject,site\ns1,tiny\n" + "".join(f"s{k},big\n" for k in range(2, 41)))
    g2 = deployment(load_scores(orl_run).roc, groups=load_groups(tmp_path / "g2.csv")).summary["groups"]
    one = g2["attributes"]["site"]["tiny"]
    assert one["n_impostor"] == 0 and one["fmr"] is None and "min_pairs" in one["fmr_reason"]
    assert one["fnmr"] is not None  # 45 genuine pairs of s1 >= 30


def test_scores_job_refuses_what_it_cannot_use(tmp_path: Path) -> None:
    proc = _eval("dataset=scores", f"hydra.run.dir={tmp_path}")
    assert proc.returncode != 0 and "dataset.path=FILE" in proc.stderr
    (tmp_path / "g.csv").write_text("name,group\na,b\n")
    (tmp_path / "s.txt").write_text("a a x 0.9\na b y 0.1\n")
    proc = _eval("dataset=scores", f"dataset.path={tmp_path / 's.txt'}", f"groups={tmp_path / 'g.csv'}",
                 f"hydra.run.dir={tmp_path / 'r'}")  # fmt: skip
    assert proc.returncode != 0 and "first column must be 'subject' or 'image'" in proc.stderr
    assert not (tmp_path / "r" / "results.json").exists()


def test_rfw_layout_evaluates_as_one_run_with_groups(orl, tmp_path: Path) -> None:
    """ORL written as an RFW-style root (two groups of 20 subjects, 3 photos each, one list per group,
    one of them without the LFW header) evaluates in one run with per-group figures."""
    from fetoolkit.data import load_eval_data
    from fetoolkit.data.export import encode_jpeg
    from fetoolkit.data.lfw import lfw_image_path, write_pairs
    from fetoolkit.data.protocols import kfold_pairs
    from fetoolkit.eval_run import evaluation_pairs
    from fetoolkit.evaluate import StatsCfg, evaluate
    from fetoolkit.imageio import read_image
    from fetoolkit.models.factory import create_embedder
    from fetoolkit.pipeline import PipelineCfg

    root = tmp_path / "rfw"
    orl_file = {(p.parent.name, p.name): p for p in orl.paths}
    counts = {}
    for g, subjects in (("GA", range(1, 21)), ("GB", range(21, 41))):
        names = [f"s{k}" for k in subjects]
        paths = [root / "data" / g / n / f"{n}_{i:04d}.jpg" for n in names for i in (1, 2, 3)]
        for n in names:
            for i in (1, 2, 3):
                target = lfw_image_path(root / "data" / g, n, i)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(encode_jpeg(read_image(orl_file[(n, f"{i}.pgm")])))
        ids = np.repeat(np.arange(len(names)), 3)
        p = kfold_pairs(ids, n_folds=10, seed=0)
        sets = []
        for f in range(10):
            sel = p.folds == f
            num = lambda k: int(k % 3) + 1  # noqa: E731
            same = [
                (names[ids[a]], num(a), num(b)) for a, b, lab in zip(p.idx_a[sel], p.idx_b[sel], p.labels[sel]) if lab
            ]
            diff = [
                (names[ids[a]], num(a), names[ids[b]], num(b))
                for a, b, lab in zip(p.idx_a[sel], p.idx_b[sel], p.labels[sel])
                if not lab
            ]
            sets.append((same, diff))
        (root / "txts" / g).mkdir(parents=True)
        f = write_pairs(root / "txts" / g / f"{g}_pairs.txt", sets)
        if g == "GB":  # RFW's own lists have no header
            f.write_text("\n".join(f.read_text().splitlines()[1:]) + "\n")
        counts[g] = (int(p.labels.sum()), int((~p.labels).sum()))
        assert len(paths) == 60
    from omegaconf import OmegaConf

    data = load_eval_data(OmegaConf.create({"name": "rfw", "root": str(root), "groups": None, "ext": "jpg"}))
    assert len(data.paths) == 120 and set(data.image_groups["group"]) == {"GA", "GB"}
    ev = evaluate(data, create_embedder("arcface"), pipeline=PipelineCfg(progress=False), stats=StatsCfg(n_boot=0))
    pairs = evaluation_pairs(ev)
    assert "finer than one of the 120 impostor" in deployment(pairs).summary["groups"]["reason"]  # FAR 1e-3
    g = deployment(pairs, threshold=ThresholdCfg(far=0.05)).summary["groups"]
    for name, (ng, ni) in counts.items():
        assert (g["attributes"]["group"][name]["n_genuine"], g["attributes"]["group"][name]["n_impostor"]) == (ng, ni)
    assert g["differentials"]["group"]["n_impostor_across_groups"] == 0
    assert ev.summary["kfold"]["n_folds"] == 10 and ev.summary["fte"] == 0
    assert ev.summary["eer"] < 0.05 and not math.isnan(g["attributes"]["group"]["GA"]["fnmr"])


def test_model_run_takes_its_threshold_from_another_run(
    orl_run: Path, dev_eval_files: tuple[Path, Path], tmp_path: Path
) -> None:
    """``threshold.dev=FILE`` on a model run: the threshold of the dev scores (folds 1-5), reported
    on this run's own comparisons (all ORL pairs)."""
    dev_f, _ = dev_eval_files
    args = ("model=arcface", "dataset=orl", f"threshold.dev={dev_f}", "stats.n_boot=0")
    _ok(_eval(*args, "threshold.far=1e-2", f"hydra.run.dir={tmp_path}"))
    r = json.loads((tmp_path / "results.json").read_text())
    dev, _ = _fold_halves(orl_run)
    t = _reference_threshold(dev["score"].to_numpy(), dev["label"].to_numpy(bool), "far", 1e-2)
    assert r["dev_eval"]["threshold"] == t and r["operating_point"]["threshold_from"] == "dev"
    df = _pairs(orl_run)
    roc = df[df["protocol"].astype(str).str.contains("roc")]
    s, y = roc["score"].to_numpy(), roc["label"].to_numpy(bool)
    assert r["dev_eval"]["eval"]["n_impostor"] == 78000
    assert r["dev_eval"]["eval"]["fmr"] == pytest.approx(float((s[~y] >= t).mean()))
    assert r["dev_eval"]["dev"]["source"]["format"] == "bob4"
    assert f"dev file: `{dev_f}`" in (tmp_path / "report.md").read_text()
    # the default FAR 1e-3 cannot be measured on dev's 900 impostors: said, not guessed
    _ok(_eval(*args, f"hydra.run.dir={tmp_path / 'fine'}"))
    r = json.loads((tmp_path / "fine" / "results.json").read_text())
    assert r["operating_point"]["threshold"] is None and "finer than one of the 900" in r["operating_point"]["reason"]
    assert "No operating point" in (tmp_path / "fine" / "report.md").read_text()

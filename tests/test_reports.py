"""Reports: the files an eval run writes, the Markdown summary, the plots, and the sweep comparison."""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from fetoolkit.eval_run import run
from fetoolkit.metrics import verification as vm
from fetoolkit.reports import plots, tables
from fetoolkit.reports.compare import collect

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
FILES = ("results.json", "pairs.parquet", "summary.md", "roc.png", "det.png", "scores.png", "erc.png")


def compose_eval(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("eval", overrides=overrides)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, orl8: Path) -> Path:
    """Two runs (torch and onnx backends) in one sweep-like folder."""
    out = tmp_path_factory.mktemp("sweep")
    for k, backend in enumerate(("torch", "onnx")):
        run(
            compose_eval(
                [
                    "model=arcface",
                    f"backend={backend}",
                    "dataset=folder",
                    f"dataset.root={orl8}",
                    "dataset.n_folds=2",
                    "dataset.label=orl8",
                    "pipeline.progress=false",
                    "stats.n_boot=200",
                ]
            ),
            out / f"{k}-arcface-{backend}",
        )
    return out


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("L"), dtype=np.float64)


def test_run_writes_every_report(sweep: Path) -> None:
    d = sweep / "0-arcface-torch"
    for f in FILES:
        assert (d / f).is_file() and (d / f).stat().st_size > 500, f
    for f in ("roc.png", "det.png", "scores.png", "erc.png"):
        img = _png(d / f)
        assert img.shape[0] >= 400 and img.shape[1] >= 600, (f, img.shape)
        assert img.std() > 20, f  # not a blank canvas
    res = json.loads((d / "results.json").read_text())
    assert res["pairs_file"] == "pairs.parquet" and res["dataset"] == "orl8"


def test_pair_table_reproduces_the_figures(sweep: Path) -> None:
    d = sweep / "0-arcface-torch"
    res = json.loads((d / "results.json").read_text())
    df = pd.read_parquet(d / "pairs.parquet")
    assert set(df["protocol"].astype(str)) == {"roc", "kfold"}
    assert list(df.columns) == [
        "protocol", "idx_a", "idx_b", "path_a", "path_b", "label", "fold", "score", "enrolled",
        "subject_a", "subject_b", "llr", "p_same",
    ]  # fmt: skip
    # the calibrated columns: on the ROC pairs only (out-of-fold LLRs), NaN on the k-fold rows
    assert df.loc[df["protocol"] == "roc", "llr"].notna().all()
    assert df.loc[df["protocol"] == "kfold", "llr"].isna().all()
    assert (df["subject_a"] == df["path_a"].map(lambda p: Path(p).parent.name)).all()
    assert ((df["subject_a"] == df["subject_b"]) == df["label"]).all()
    roc = df[df["protocol"] == "roc"]
    assert len(roc) == 32 * 31 // 2 and roc["enrolled"].all()
    s, y = tables.roc_scores(df)
    assert vm.eer(s, y).eer == pytest.approx(res["eer"], abs=1e-12)
    k = df[df["protocol"] == "kfold"]
    acc = vm.kfold_accuracy(k["score"].to_numpy(), k["label"].to_numpy(), k["fold"].to_numpy())
    assert acc.accuracy_mean == pytest.approx(res["accuracy_mean"], abs=1e-12)
    first = roc.iloc[0]
    assert Path(first["path_a"]).parent.name == "s1" and bool(first["label"]) == (
        Path(first["path_a"]).parent == Path(first["path_b"]).parent
    )


def test_markdown_summary(sweep: Path) -> None:
    d = sweep / "0-arcface-torch"
    res = json.loads((d / "results.json").read_text())
    md = (d / "summary.md").read_text()
    assert md.startswith("# arcface_mbf.sirius (torch) on orl8")
    lo, hi = res["accuracy_ci"]
    assert f"{res['accuracy_mean']:.4f} [{lo:.4f}, {hi:.4f}]" in md
    assert f"{res['eer']:.4f}" in md and "| norm (default) |" in md and "Genuine-score spread" in md
    s = dict(res, fte=2, fte_images=["a.jpg: no face found", "b.jpg: corrupt"])
    assert "## Failures to enrol\n\n- a.jpg: no face found\n- b.jpg: corrupt" in tables.markdown_summary(s)


def test_compare_collects_runs(sweep: Path) -> None:
    paths = collect([sweep])
    df = pd.read_csv(paths["csv"])
    assert sorted(df["backend"]) == ["onnx", "torch"] and set(df["model"]) == {"arcface_mbf.sirius"}
    for _, row in df.iterrows():
        res = json.loads((sweep / row["run"] / "results.json").read_text())
        assert row["eer"] == pytest.approx(res["eer"]) and row["accuracy"] == pytest.approx(res["accuracy_mean"])
        assert row["accuracy_ci"] == f"{res['accuracy_ci'][0]:.4f}-{res['accuracy_ci'][1]:.4f}"
    # torch and onnx embeddings differ only by rounding: the figures agree closely.
    assert abs(df["eer"].iloc[0] - df["eer"].iloc[1]) < 0.01
    md = paths["markdown"].read_text()
    assert md.count("| arcface_mbf.sirius |") == 2
    assert _png(paths["roc"]).std() > 20


def test_compare_pairs_runs_of_the_same_pairs(sweep: Path) -> None:
    """torch and onnx runs of one data set score the same pairs: comparison.md has the paired rows
    (difference intervals by subject, McNemar), checked here against the metrics called directly."""
    paths = collect([sweep])
    md = paths["markdown"].read_text()
    assert "### Paired against the reference `0-arcface-torch`" in md and "subject bootstrap" in md
    paired = pd.read_csv(paths["paired_csv"])
    assert list(paired["run"]) == ["1-arcface-onnx"] and paired["paired"].all()
    row = paired.iloc[0]
    assert row["method"] == "subject" and row["note"] == "same pairs" and row["n_pairs"] == 32 * 31 // 2
    a, b = (tables.read_pairs(sweep / r / "pairs.parquet") for r in ("0-arcface-torch", "1-arcface-onnx"))
    a, b = (d[d["protocol"].astype(str) == "roc"] for d in (a, b))
    y = a["label"].to_numpy(bool)
    s0, s1 = a["score"].to_numpy(), b["score"].to_numpy()
    assert row["eer_diff"] == pytest.approx(vm.eer(s1, y).eer - vm.eer(s0, y).eer, abs=1e-12)
    assert row["eer_diff_low"] <= row["eer_diff"] <= row["eer_diff_high"]
    t0, t1 = vm.eer(s0, y).threshold, vm.eer(s1, y).threshold
    worse = int((((s0 >= t0) == y) & ((s1 >= t1) != y)).sum())
    assert row["mcnemar_eer_worse"] == worse
    assert "| 1-arcface-onnx | 496 |" in md


def test_compare_refuses_to_pair_runs_of_other_data_sets(sweep: Path, tmp_path: Path) -> None:
    """A run of another data set gets its own table and no paired row; a run of the same data-set
    label but another pair list is not paired either, with the reason."""
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy, ignore=shutil.ignore_patterns("comparison*", "roc_overlay.png"))
    other = copy / "1-arcface-onnx" / "results.json"
    res = json.loads(other.read_text())
    res["dataset"] = "lfw-like"
    other.write_text(json.dumps(res))
    fewer = copy / "2-arcface-fewer"
    shutil.copytree(copy / "0-arcface-torch", fewer)
    df = pd.read_parquet(fewer / "pairs.parquet")
    df.drop(index=df.index[df["protocol"].astype(str) == "roc"][:5]).to_parquet(fewer / "pairs.parquet")
    paths = collect([copy], tmp_path / "cmp")
    md = paths["markdown"].read_text()
    assert "cover 2 data sets" in md and "cannot be compared pairwise" in md
    assert "## lfw-like: 1 run" in md and "## orl8: 2 runs" in md
    lfw_part = md.split("## lfw-like: 1 run")[1].split("## orl8")[0]
    assert "Paired against" not in lfw_part and lfw_part.count("| arcface_mbf.sirius |") == 1
    paired = pd.read_csv(paths["paired_csv"])
    assert [Path(r).name for r in paired["run"]] == ["2-arcface-fewer"] and not paired["paired"].any()
    assert "differs from the reference" in paired["note"].iloc[0]
    assert "differs from the reference" in md
    # no ROC overlay mixes the two data sets unless asked
    assert not (tmp_path / "cmp" / "roc_overlay.png").exists()
    assert {p.name for p in (tmp_path / "cmp").glob("roc_overlay_*.png")} == {
        "roc_overlay_lfw-like.png",
        "roc_overlay_orl8.png",
    }
    assert collect([copy], tmp_path / "all", overlay_all=True)["roc"].is_file()


def test_compare_cli(sweep: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "fetoolkit.compare", str(sweep), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| arcface_mbf.sirius | onnx |" in proc.stdout  # runs made by run(cfg), not by a command
    assert {p.name for p in tmp_path.iterdir()} >= {"comparison.md", "comparison.csv", "roc_overlay.png"}
    bad = subprocess.run(
        [sys.executable, "-m", "fetoolkit.compare", str(tmp_path / "empty_nothing")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert bad.returncode == 2 and "no such folder" in bad.stderr


def test_compare_writes_whole_or_leaves_the_earlier_comparison(
    sweep: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compare that fails while writing (the disk fills during the ROC overlay) raises naming the
    file and leaves the earlier comparison exactly as it was: no table of the new runs beside the
    old plot, no half file, no staging folder (issue 37: compare was not atomic)."""
    out = tmp_path / "cmp"
    collect([sweep / "0-arcface-torch"], out)  # the earlier comparison: one run
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert len(pd.read_csv(out / "comparison.csv")) == 1

    def full_disk(curves: object, path: Path, **kwargs: object) -> None:
        Path(path).write_bytes(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(plots, "plot_roc", full_disk)
    with pytest.raises(OSError, match=f"could not write {out / 'roc_overlay.png'}: No space left"):
        collect([sweep], out)  # two runs now
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    proc = subprocess.run(  # the command under a 2 KB file-size limit: one line, exit 2
        [sys.executable, "-m", "fetoolkit.compare", str(sweep), "--out", str(out / "sub")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000)),
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"could not write {out / 'sub'}/" in proc.stderr and "File too large" in proc.stderr
    assert sorted(p.name for p in (out / "sub").iterdir()) == []


def test_probit_and_edge_case_plots(tmp_path: Path) -> None:
    p = np.array([1e-6, 1e-3, 0.05, 0.5, 0.9])
    np.testing.assert_allclose(plots._probit(p), [NormalDist().inv_cdf(v) for v in p], rtol=1e-12)
    assert np.isnan(plots._probit(np.array([0.0, 1.0]))).all()
    # Perfectly separated scores: the DET has no drawable point; the plots still render.
    s, y = np.array([0.9, 0.8, 0.1, 0.2]), np.array([True, True, False, False])
    det = vm.det_curve(s, y)
    plots.plot_det({"perfect": (det.far, det.frr)}, tmp_path / "det.png")
    plots.plot_score_hist(s[y], s[~y], tmp_path / "h.png", thresholds={"t": 0.5, "nan": float("nan")})
    assert (tmp_path / "det.png").stat().st_size > 1000 and (tmp_path / "h.png").stat().st_size > 1000


@pytest.mark.slow
def test_hydra_multirun_two_models_two_backends(orl8: Path, tmp_path: Path) -> None:
    """`-m model.name=A,B backend=torch,onnx` writes four runs and the comparison (the callback)."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fetoolkit.eval",
            "-m",
            "model=arcface",
            "model.name=arcface_mbf.sirius,mobilefacenet512",
            "backend=torch,onnx",
            "dataset=folder",
            f"dataset.root={orl8}",
            "dataset.n_folds=2",
            "pipeline.progress=false",
            "stats.n_boot=100",
            f"hydra.sweep.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    df = pd.read_csv(tmp_path / "comparison.csv")
    assert sorted(zip(df["model"], df["backend"])) == [
        ("arcface (arcface_mbf.sirius)", "onnx"),  # the command's model=arcface beside the registry name
        ("arcface (arcface_mbf.sirius)", "torch"),
        ("mobilefacenet512", "onnx"),  # model.name= overrode the chosen config: the registry name alone
        ("mobilefacenet512", "torch"),
    ]
    assert (tmp_path / "comparison.md").is_file() and _png(tmp_path / "roc_overlay.png").std() > 20


# ----------------------------------------------------------------------------------------
# Outputs written whole: results.json last, marked complete; compare reads only finished runs
# ----------------------------------------------------------------------------------------


def test_results_json_is_written_last_and_marked_complete(sweep: Path) -> None:
    for run_dir in sorted(p for p in sweep.iterdir() if p.is_dir()):
        res = json.loads((run_dir / "results.json").read_text())
        assert res["complete"] is True
        assert not list(run_dir.glob(".writing-*")), "the staging folder was left behind"
        newest_other = max((run_dir / f).stat().st_mtime_ns for f in FILES if f != "results.json")
        assert (run_dir / "results.json").stat().st_mtime_ns >= newest_other


def test_a_failed_write_leaves_no_finished_looking_run(
    orl8: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(plots, "plot_erc", full_disk)  # the last report written before results.json
    cfg = compose_eval(
        [
            "model=arcface",
            "dataset=folder",
            f"dataset.root={orl8}",
            "dataset.n_folds=2",
            "pipeline.progress=false",
            "stats.n_boot=0",
        ]
    )
    with pytest.raises(OSError, match="No space left"):
        run(cfg, tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [], "files of a failed run were left in place"


def test_compare_leaves_out_unfinished_runs_naming_them(
    sweep: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy, ignore=shutil.ignore_patterns("comparison*", "roc_overlay.png"))
    runs = sorted(p for p in copy.iterdir() if p.is_dir())
    truncated = runs[0] / "results.json"
    truncated.write_text(truncated.read_text()[:200])
    out = collect([copy], tmp_path / "cmp")
    table = pd.read_csv(out["csv"])
    assert len(table) == len(runs) - 1
    assert any(str(truncated) in r.getMessage() and "not readable JSON" in r.getMessage() for r in caplog.records)
    unfinished = runs[1] / "results.json"
    res = json.loads(unfinished.read_text())
    del res["complete"]
    unfinished.write_text(json.dumps(res))
    with pytest.raises(FileNotFoundError, match="no complete results.json"):
        collect([copy], tmp_path / "cmp2")


def test_summary_md_lists_skipped_files(sweep: Path) -> None:
    res = json.loads((sweep / "0-arcface-torch" / "results.json").read_text())
    assert res["data"]["skipped"] == []  # nothing was skipped in this folder
    res["data"]["skipped"] = [{"path": "/x/a/notes.txt", "reason": "not an image format Pillow reads (.txt)"}]
    md = tables.markdown_summary(res)
    assert "## Skipped (not read)" in md and "`/x/a/notes.txt`: not an image format Pillow reads (.txt)" in md
    assert res["data"]["hygiene"] == {"duplicates": [], "identity_case": [], "single_image_identities": []}  # clean
    res["data"]["hygiene"] = {
        "duplicates": [{"path": "/x/b/2.pgm", "reason": "the same file as /x/a/1.pgm (identities a and b)"}],
        "single_image_identities": [{"path": "/x/c/0.pgm", "reason": "the only image of identity c"}],
    }
    md = tables.markdown_summary(res)
    assert "## Duplicate images" in md and "`/x/b/2.pgm`: the same file as /x/a/1.pgm" in md
    assert "## Identities with one image" in md and "`/x/c/0.pgm`" in md


def test_compare_counts_the_nonfinite_scores_of_score_runs(tmp_path: Path) -> None:
    """Issue 37 (review): a score run keeps its scores as read, so its pairs.parquet can hold +inf and
    NaN; compare must count them as errors, as the run itself did, not crash on them or drop them."""
    rng = np.random.default_rng(0)
    rows = [(1, rng.normal(0.7, 0.1), f"p{a}", f"p{a}") for a in range(20) for _ in range(10)]
    rows += [(0, rng.normal(0.1, 0.1), f"p{a}", f"p{(a + 1) % 20}") for a in range(20) for _ in range(50)]
    clean = pd.DataFrame(rows, columns=["label", "score", "subject1", "subject2"])
    dirty = clean.copy()
    dirty.loc[dirty.index[dirty.label == 0][0], "score"] = np.inf  # a certain false match
    dirty.loc[dirty.index[dirty.label == 1][0], "score"] = np.nan  # a certain false non-match
    summaries = {}
    for name, table in (("clean", clean), ("dirty", dirty)):
        table.to_csv(tmp_path / f"{name}.csv", index=False)
        overrides = ["dataset=scores", f"dataset.path={tmp_path / f'{name}.csv'}", "stats.n_boot=0"]
        summaries[name] = run(compose_eval(overrides), tmp_path / "sweep" / name)
    paths = collect([tmp_path / "sweep"])
    table = pd.read_csv(paths["csv"])
    eer = dict(zip(table["run"].map(lambda r: Path(r).name), table["eer"]))
    assert eer["dirty"] == pytest.approx(summaries["dirty"]["eer"]) and eer["dirty"] > eer["clean"]
    assert paths["roc"].is_file()

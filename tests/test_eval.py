"""The main job end to end on real faces: the command a user types, and its figures."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from fetoolkit.eval_run import run

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
REQUIRED = {
    "model",
    "backend",
    "dataset",
    "n_images",
    "fte",
    "n_genuine",
    "n_impostor",
    "accuracy_mean",
    "accuracy_std",
    "best_threshold",
    "auc",
    "eer",
    "tar_at_far",
    "contract",
    "versions",
}
FIGURES = (
    "accuracy_mean",
    "accuracy_std",
    "best_threshold",
    "auc",
    "eer",
    "tar_at_far",
    "n_genuine",
    "n_impostor",
    "fte",
)


def compose_eval(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("eval", overrides=overrides)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("eval")
    proc = subprocess.run(
        [sys.executable, "-m", "fetoolkit.eval", "model=arcface", "dataset=orl", f"hydra.run.dir={out}"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, proc.stdout + proc.stderr


def test_cli_writes_results_and_plot(cli_run: tuple[Path, str]) -> None:
    out, log = cli_run
    res = json.loads((out / "results.json").read_text())
    assert REQUIRED <= set(res), REQUIRED - set(res)
    assert (out / "roc.png").stat().st_size > 10_000
    assert "10-fold accuracy" in log and "EER" in log
    assert res["model"] == "arcface_mbf.sirius" and res["backend"] == "torch" and res["dataset"] == "orl"
    # the tables name the model as the command did, beside the registry name
    assert res["model_config"] == "arcface"
    assert (out / "summary.md").read_text().startswith("# arcface (arcface_mbf.sirius) (torch) on orl")
    assert res["schema_version"] == 2 and res["complete"] is True
    assert set(res["tar_at_far"]) == {"1e-1", "1e-2", "1e-3"}
    for key in ("accuracy_mean", "auc", "eer", "best_threshold"):
        assert 0.0 <= res[key] <= 1.0
    assert res["contract"]["embed_dim"] == 192


def test_orl_figures_meet_the_bar(cli_run: tuple[Path, str]) -> None:
    """A correct MTCNN + alignment pipeline reaches 0.996 / 0.0056 here; no alignment gives 0.93."""
    res = json.loads((cli_run[0] / "results.json").read_text())
    assert res["n_images"] == 400 and res["fte"] == 0
    assert (res["n_genuine"], res["n_impostor"]) == (1800, 78000)
    assert res["kfold"]["n_genuine"] == 1800 and res["kfold"]["n_impostor"] == 1800
    assert res["accuracy_mean"] >= 0.993, res["accuracy_mean"]
    assert res["eer"] <= 0.010, res["eer"]
    assert res["tar_at_far"]["1e-3"] >= 0.95


def test_second_run_identical(cli_run: tuple[Path, str], tmp_path: Path) -> None:
    first = json.loads((cli_run[0] / "results.json").read_text())
    second = run(compose_eval(["model=arcface", "dataset=orl", "pipeline.progress=false"]), tmp_path)
    for key in FIGURES:
        assert second[key] == first[key], key


@pytest.mark.slow
def test_no_alignment_is_much_worse(tmp_path: Path) -> None:
    res = run(compose_eval(["model=arcface", "pipeline.align=false", "pipeline.progress=false"]), tmp_path)
    assert res["accuracy_mean"] < 0.97 and res["eer"] > 0.03


# --------------------------------------------------------------------------------------------
# Issue #4: intervals, decades, reports, cache, failures to enrol
# --------------------------------------------------------------------------------------------

NEW_KEYS = {
    "accuracy_ci",
    "eer_ci",
    "tar_at_far_ci",
    "tar_at_far_decades",
    "threshold_at_far",
    "finest_far",
    "quality",
    "cache",
    "pairs_file",
    "stats",
    "fte_policy",
    "n_pairs_dropped",
}


def test_intervals_decades_and_reports(cli_run: tuple[Path, str]) -> None:
    out, log = cli_run
    res = json.loads((out / "results.json").read_text())
    assert NEW_KEYS <= set(res), NEW_KEYS - set(res)
    for f in ("pairs.parquet", "summary.md", "det.png", "scores.png", "erc.png"):
        assert (out / f).stat().st_size > 1000, f
    lo, hi = res["accuracy_ci"]
    assert 0.98 <= lo <= res["accuracy_mean"] <= hi <= 1.0
    lo, hi = res["eer_ci"]
    assert 0.0 <= lo <= res["eer"] <= hi <= 0.02
    # Decades down to the finest FAR 78,000 impostor pairs support: 1e-4 (7.8 impostors), not 1e-5.
    assert list(res["tar_at_far_decades"]) == ["1e-1", "1e-2", "1e-3", "1e-4"]
    assert res["finest_far"] == pytest.approx(1 / 78000)
    assert set(res["threshold_at_far"]) == set(res["tar_at_far_decades"]) <= set(res["tar_at_far_ci"])
    for k, tar in res["tar_at_far_decades"].items():
        lo, hi = res["tar_at_far_ci"][k]
        assert 0.0 <= lo <= hi <= 1.0 and res["achieved_far"][k] <= float(k)
        if k in res["tar_at_far"]:
            assert res["tar_at_far"][k] == tar and res["tar_at_far_threshold"][k] == res["threshold_at_far"][k]
    thr = list(res["threshold_at_far"].values())
    assert thr == sorted(thr)  # stricter FAR, higher threshold
    assert res["stats"]["n_boot"] == 1000 and res["cache"] in ("hit", "miss")
    q = res["quality"]
    assert q["default"] == "norm" and q["norms"]["n"] == 400 and q["norms"]["min"] > 0
    assert set(q["erc"]["scores"]) >= {"norm", "magnitude_diversity", "flip_consistency", "detector_confidence"}
    assert q["genuine_spread"]["n_subjects"] == 40 and len(q["genuine_spread"]["worst"]) == 5
    assert "[" in log and "embedding cache" in log


def test_second_run_is_served_from_the_cache(cli_run: tuple[Path, str], tmp_path: Path) -> None:
    res = run(compose_eval(["model=arcface", "dataset=orl", "pipeline.progress=false"]), tmp_path)
    assert res["cache"] == "hit" and "detect_align" not in res["timing_s"] and "embed" not in res["timing_s"]
    first = json.loads((cli_run[0] / "results.json").read_text())
    for key in ("accuracy_ci", "eer_ci", "tar_at_far_ci", "tar_at_far_decades", "quality"):
        assert res[key] == first[key], key


@pytest.fixture(scope="module")
def folder_with_failures(tmp_path_factory: pytest.TempPathFactory, orl) -> tuple[Path, list[str], Path]:
    """8 ORL subjects x 3 photos, plus a face-less image and a corrupt file in two subjects' folders."""
    import shutil

    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("fte")
    for p, i in zip(orl.paths, orl.identities):
        if i < 8 and p.stem in {"1", "2", "3"}:
            (root / orl.names[i]).mkdir(exist_ok=True)
            shutil.copy(p, root / orl.names[i] / p.name)
    Image.fromarray(np.full((112, 92), 128, np.uint8)).save(root / orl.names[0] / "9_blank.png")
    (root / orl.names[1] / "9_corrupt.jpg").write_bytes(b"\xff\xd8 truncated")
    return root, ["9_blank.png", "9_corrupt.jpg"], root.parent / f"{root.name}_cache"


def test_failures_to_enrol_are_dropped_and_counted(folder_with_failures, tmp_path: Path) -> None:
    from fetoolkit.data import load_eval_data

    root, bad, cache = folder_with_failures
    cfg = compose_eval(
        [
            "dataset=folder",
            f"dataset.root={root}",
            "dataset.n_folds=2",
            "pipeline.progress=false",
            "stats.n_boot=100",
            f"cache.dir={cache}",
        ]
    )
    res = run(cfg, tmp_path / "out")
    assert res["n_images"] == 26 and res["fte"] == 2 and res["fte_policy"] == "drop"
    assert [Path(m.split(":")[0]).name for m in res["fte_images"]] == bad
    assert "no face" in res["fte_images"][0] and "decodable" in res["fte_images"][1]
    data = load_eval_data(cfg.dataset)
    failed = {i for i, p in enumerate(data.paths) if p.name in bad}
    for name, prot in (("roc", data.roc), ("kfold", data.kfold)):
        touching = sum(int(a) in failed or int(b) in failed for a, b in zip(prot.idx_a, prot.idx_b))
        assert res["n_pairs_dropped"][name] == touching > 0
    assert res["n_genuine"] + res["n_impostor"] == len(data.roc) - res["n_pairs_dropped"]["roc"]
    pairs = pd.read_parquet(tmp_path / "out" / "pairs.parquet")
    assert int((~pairs["enrolled"]).sum()) == sum(res["n_pairs_dropped"].values())
    assert pairs.loc[~pairs["enrolled"], "score"].isna().all()
    assert "Failures to enrol" in (tmp_path / "out" / "summary.md").read_text()


def test_failures_to_enrol_fail_policy(folder_with_failures, tmp_path: Path) -> None:
    from fetoolkit.evaluate import EnrolmentError

    root, _, cache = folder_with_failures
    cfg = compose_eval(
        [
            "dataset=folder",
            f"dataset.root={root}",
            "dataset.n_folds=2",
            "pipeline.progress=false",
            "fte_policy=fail",
            f"cache.dir={cache}",
        ]
    )  # crops cached by the test above
    with pytest.raises(EnrolmentError, match=r"2 of 26 images did not enrol.*fte_policy=drop"):
        run(cfg, tmp_path)
    with pytest.raises(ValueError, match="fte_policy must be one of"):
        run(compose_eval(["fte_policy=skip"]), tmp_path)


def test_subject_intervals_are_wider_than_pair_intervals_on_orl(cli_run: tuple[Path, str]) -> None:
    """ORL's 79,800 ROC pairs come from 40 people: resampling the pairs as independent understates the
    uncertainty. The run's default (stats.method=subject) resamples the 40 subjects, and its EER
    interval must be wider than the pair bootstrap's on the same scores."""
    import numpy as np

    from fetoolkit.metrics import verification as vm

    out, _ = cli_run
    res = json.loads((out / "results.json").read_text())
    st = res["stats"]
    assert (st["requested"], st["method"]) == ("subject", "subject") and st["n_subjects"] == {"roc": 40, "kfold": 40}
    df = pd.read_parquet(out / "pairs.parquet")
    roc = df[df["protocol"].astype(str).str.startswith("roc")]
    s, y = roc["score"].to_numpy(np.float64), roc["label"].to_numpy(bool)
    subjects = (roc["subject_a"].to_numpy(object), roc["subject_b"].to_numpy(object))
    pair = vm.verification_report(s, y, n_boot=1000, seed=st["seed"], method="pair")
    subj = vm.verification_report(s, y, n_boot=1000, seed=st["seed"], method="subject", subjects=subjects)
    assert tuple(res["eer_ci"]) == subj.eer_ci  # the run's interval is the subject one (names or ids alike)
    assert pair.eer_ci is not None and subj.eer_ci is not None
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(subj.eer_ci) > 1.3 * width(pair.eer_ci), (subj.eer_ci, pair.eer_ci)
    assert subj.eer_ci[0] <= subj.eer <= subj.eer_ci[1]


def test_roc_cis_equal_the_single_intervals() -> None:
    """The shared-resample interval helper gives exactly eer_ci / tar_at_far_ci (same seed)."""
    import numpy as np

    from fetoolkit.metrics import verification as vm

    rng = np.random.default_rng(3)
    y = rng.random(3000) < 0.3
    s = rng.normal(np.where(y, 2.0, 0.0), 1.0)
    e, t = vm.roc_cis(s, y, [1e-1, 1e-2, 1e-4], n_boot=150, seed=5)
    assert e == vm.eer_ci(s, y, n_boot=150, seed=5)
    assert t["1e-1"] == vm.tar_at_far_ci(s, y, 1e-1, n_boot=150, seed=5)
    assert t["1e-2"] == vm.tar_at_far_ci(s, y, 1e-2, n_boot=150, seed=5)
    assert all(np.isnan(t["1e-4"]))  # 2,100 impostors cannot measure 1e-4


@pytest.mark.parametrize("depth", [18, 34, 50, 100, 200])
def test_every_iresnet_has_a_model_config(depth: int) -> None:
    from fetoolkit.models.registry import get_model_spec

    cfg = compose_eval([f"model=arcface_r{depth}", "model.weights=/some/backbone.pth"])
    assert cfg.model.name == f"arcface_r{depth}" and cfg.model.weights == "/some/backbone.pth"
    assert get_model_spec(cfg.model.name).arch == f"iresnet{depth}"


def test_iresnet_checkpoint_through_the_main_job(folder_with_failures, tmp_path: Path) -> None:
    """``model=arcface_r18 model.weights=backbone.pth``: an arcface_torch-layout state_dict runs the
    whole job (512-d embeddings); without weights the job fails and names the known releases."""
    import torch

    from fetoolkit.models.iresnet import iresnet

    torch.manual_seed(0)
    pth = tmp_path / "backbone.pth"
    torch.save(iresnet(18).state_dict(), pth)
    root, bad, cache = folder_with_failures
    cfg = compose_eval(
        [
            "model=arcface_r18",
            f"model.weights={pth}",
            "dataset=folder",
            f"dataset.root={root}",
            "dataset.n_folds=2",
            "pipeline.progress=false",
            "stats.n_boot=100",
            f"cache.dir={cache}",
        ]
    )
    res = run(cfg, tmp_path / "out")
    assert res["model"] == "arcface_r18" and res["n_images"] == 26 and res["fte"] == len(bad)
    assert res["contract"]["embed_dim"] == 512
    proc = subprocess.run(
        [sys.executable, "-m", "fetoolkit.eval", "model=arcface_r50", f"hydra.run.dir={tmp_path / 'r50'}"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "MODEL_PATH"},
    )
    assert proc.returncode != 0
    assert "no weights ship" in proc.stderr and "w600k_r50.onnx" in proc.stderr, proc.stderr[-2000:]


def test_an_unwritable_cache_costs_one_warning_not_the_run(
    cli_run: tuple[Path, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The eval job with a cache folder that cannot be created or written (it lies under a regular
    file: a real ``NotADirectoryError`` from the OS, as root cannot be denied by permissions):
    every figure equals the cached CLI run's, one warning is logged, nothing is cached."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cfg = compose_eval(["model=arcface", "dataset=orl", "pipeline.progress=false", f"cache.dir={blocker / 'cache'}"])
    with caplog.at_level(logging.WARNING):
        res = run(cfg, tmp_path / "out")
    first = json.loads((cli_run[0] / "results.json").read_text())
    for key in (*FIGURES, "accuracy_ci", "eer_ci", "tar_at_far_ci", "tar_at_far_decades"):
        assert res[key] == first[key], key
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("cannot be written" in w for w in warnings) == 1, warnings
    assert json.loads((tmp_path / "out" / "results.json").read_text())["complete"] is True

"""The decision profile: written by every eval run, read by ``fetoolkit.verify`` and its command,
refused for another model, weights, detector or pipeline; the calibrated columns of the pair table."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import fetoolkit
from fetoolkit.data.wild import load_wild
from fetoolkit.decision.profile import ProfileError, ProfileMismatch, load_profile
from fetoolkit.eval_run import run
from tests.test_eval import compose_eval as _compose


@pytest.fixture(scope="module")
def profile_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """An ORL eval with YuNet and the ONNX backend (the service's defaults): its folder and summary."""
    out = tmp_path_factory.mktemp("profile_run")
    overrides = ["model=arcface", "dataset=orl", "detector=yunet", "backend=onnx", "stats.n_boot=200"]
    summary = run(_compose([*overrides, "pipeline.progress=false"]), out)
    return out, summary


@pytest.fixture(scope="module")
def wild() -> dict[str, Path]:
    return load_wild()


def _orl_photos() -> tuple[Path, Path, Path]:
    """Two photos of ORL's s1 and one of s2 (the real files, fetched and checked by load_orl)."""
    from fetoolkit.data.sources import load_orl

    paths = {(p.parent.name, p.name): p for p in map(Path, load_orl().paths)}
    return paths["s1", "1.pgm"], paths["s1", "2.pgm"], paths["s2", "1.pgm"]


def test_every_eval_run_writes_a_profile_and_the_calibration(profile_run) -> None:
    out, summary = profile_run
    for name in ("profile.json", "reliability.png", "tippett.png"):
        assert (out / name).stat().st_size > 0, name
    cal = summary["calibration"]
    assert cal["cllr"] < 0.1 and cal["cllr_min"] <= cal["cllr"] and cal["ece"] <= 0.02
    assert cal["cllr_ci"][0] <= cal["cllr"] <= cal["cllr_ci"][1]
    assert "subject-disjoint" in cal["fit_on"]
    p = load_profile(out)
    assert p.profile_id == summary["profile"]["profile_id"]
    assert p.model["name"] == "arcface_mbf.sirius" and p.model["weights_sha256"] == summary["weights_sha256"]
    assert p.crops["detector"]["detector"] == "yunet"
    # thresholds and their intervals are results.json's (one figure, one interval)
    for key, t in summary["thresholds"]["far"].items():
        if t["threshold"] is not None:
            assert p.threshold(float(key))["threshold"] == t["threshold"]
            assert p.threshold(float(key))["interval"] == t["threshold_ci"]
    assert p.data["data"]["n_subjects"] == 40 and p.data["data"]["n_genuine"] == 1800
    assert len(p.data["data"]["pairs_sha256"]) == 64


def test_the_pair_table_gains_out_of_fold_llr_and_p_same(profile_run) -> None:
    out, summary = profile_run
    df = pd.read_parquet(out / "pairs.parquet")
    roc = df[df.protocol.isin(["roc", "roc+kfold"]) & df.enrolled]
    assert roc.llr.notna().all() and df.loc[~df.index.isin(roc.index), "llr"].isna().all()
    prior = summary["calibration"]["prior"]
    np.testing.assert_allclose(
        roc.p_same, 1 / (1 + np.exp(-(roc.llr + math.log(prior / (1 - prior))))), rtol=1e-9, atol=1e-15
    )
    # out of fold: not the final map's values (fitted on every pair), but the same side of 0 nearly always
    final = load_profile(out).llr(roc.score.to_numpy())
    assert not np.allclose(roc.llr, final) and (np.sign(roc.llr) == np.sign(final)).mean() > 0.995
    # the table is a score file: dataset=scores on it reproduces the calibration figures
    again = run(_compose(["dataset=scores", f"dataset.path={out / 'pairs.parquet'}", "stats.n_boot=0"]), None)
    for k in ("cllr", "cllr_min", "ece", "brier", "log_loss"):
        assert again["calibration"][k] == pytest.approx(summary["calibration"][k], rel=1e-9), k


def test_verify_with_a_profile_gives_its_llr_and_decision(profile_run, wild) -> None:
    out, _ = profile_run
    p = load_profile(out / "profile.json")
    a, b, c = _orl_photos()
    for x, y in ((a, b), (a, c), (wild["obama.jpg"], wild["obama2.jpg"]), (wild["obama.jpg"], wild["biden.jpg"])):
        v = fetoolkit.verify(x, y, profile=out / "profile.json", fmr=1e-3)
        d = p.decide(v.score, fmr=1e-3)
        assert (v.llr, v.p_same, v.same, v.threshold, v.profile_id) == (
            d.llr,
            d.p_same,
            d.same,
            d.threshold,
            p.profile_id,
        )
        assert v.warnings == ()
    same = fetoolkit.verify(wild["obama.jpg"], wild["obama2.jpg"], profile=out)
    other = fetoolkit.verify(wild["obama.jpg"], wild["biden.jpg"], profile=out)
    assert same.llr > 0 > other.llr and same.same and not other.same
    # another prior moves p_same, not the llr or the decision
    base = fetoolkit.verify(a, b, profile=out)
    v = fetoolkit.verify(a, b, profile=out, prior=0.5)
    assert (v.llr, v.same, v.prior) == (base.llr, base.same, 0.5) and base.prior == p.prior
    assert v.p_same == pytest.approx(1 / (1 + math.exp(-v.llr)))


def test_a_profile_for_another_model_detector_or_pipeline_is_refused(profile_run) -> None:
    out, _ = profile_run
    a, b, _ = _orl_photos()
    with pytest.raises(ProfileMismatch) as e:
        fetoolkit.verify(a, b, profile=out, model="mobilefacenet512")
    assert "model: profile arcface_mbf.sirius, here mobilefacenet512" in str(e.value)
    assert "weights sha256" in str(e.value)
    with pytest.raises(ProfileMismatch, match="detector: profile yunet, here mtcnn"):
        fetoolkit.verify(a, b, profile=out, detector="mtcnn")
    with pytest.raises(ProfileMismatch, match="pipeline align"):
        fetoolkit.verify(a, b, profile=out, aligned=True)
    v = fetoolkit.verify(a, b, profile=out, detector="mtcnn", allow_profile_mismatch=True)
    assert any("detector: profile yunet, here mtcnn" in w for w in v.warnings)
    # the torch backend runs the same weights: said, not refused
    t = fetoolkit.verify(a, b, profile=out, backend="torch")
    assert any(w.startswith("backend: profile onnx, here torch") for w in t.warnings)
    with pytest.raises(ValueError, match="has no threshold at FMR 1e-06"):
        fetoolkit.verify(a, b, profile=out, fmr=1e-6)


def test_an_edited_or_missing_profile_is_refused(profile_run, tmp_path: Path) -> None:
    out, _ = profile_run
    d = json.loads((out / "profile.json").read_text())
    d["thresholds"]["1e-3"]["threshold"] = 0.1  # a looser threshold, the id left as it was
    bad = tmp_path / "profile.json"
    bad.write_text(json.dumps(d))
    with pytest.raises(ProfileError, match="does not match the content"):
        load_profile(bad)
    with pytest.raises(ProfileError, match="no such file"):
        load_profile(tmp_path / "nothing.json")


def test_the_verify_command_takes_a_profile(profile_run) -> None:
    out, _ = profile_run
    a, b, _ = _orl_photos()
    cmd = [sys.executable, "-m", "fetoolkit.verify", str(a), str(b), f"profile={out / 'profile.json'}"]
    proc = subprocess.run([*cmd, "json=true"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    v = fetoolkit.verify(a, b, profile=out)
    assert got["llr"] == pytest.approx(v.llr, abs=1e-9) and got["same_person"] == v.same
    assert got["profile_id"] == v.profile_id
    refused = subprocess.run([*cmd, "model=mobilefacenet512"], capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "model: profile arcface_mbf.sirius, here mobilefacenet512" in refused.stderr


def test_data_too_small_to_calibrate_keeps_the_run_and_says_why(tmp_path: Path) -> None:
    """Four subjects cannot fill five subject-disjoint folds: the run's figures stand, results.json
    says why there is no calibration, and no profile is written."""
    rng = np.random.default_rng(0)
    rows = []
    for a in range(4):
        for b in range(a, 4):
            for _ in range(30):
                same = a == b
                rows.append((int(same), rng.normal(0.6 if same else 0.1, 0.1), f"p{a}", f"p{b}"))
    table = pd.DataFrame(rows, columns=["label", "score", "subject1", "subject2"])
    table.to_csv(tmp_path / "scores.csv", index=False)
    out = tmp_path / "run"
    summary = run(_compose(["dataset=scores", f"dataset.path={tmp_path / 'scores.csv'}", "stats.n_boot=0"]), out)
    assert summary["calibration"] is None and summary["eer"] is not None
    assert "4 subjects cannot be dealt into 5 subject-disjoint calibration folds" in summary["calibration_reason"]
    assert not (out / "profile.json").exists() and (out / "results.json").is_file()
    # three folds of 2, 1 and 1 subjects: the pairs between two folds would be fitted on one subject's
    # pairs, all genuine: refused with the reason too
    summary = run(_compose(["dataset=scores", f"dataset.path={tmp_path / 'scores.csv'}", "calibration.folds=3"]), None)
    assert summary["calibration"] is None and "left no genuine or no impostor pair" in summary["calibration_reason"]

"""The main job end to end on real faces: the command a user types, and its figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from fetoolkit.eval import run

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
REQUIRED = {"model", "backend", "dataset", "n_images", "fte", "n_genuine", "n_impostor", "accuracy_mean",
            "accuracy_std", "best_threshold", "auc", "eer", "tar_at_far", "contract", "versions"}
FIGURES = ("accuracy_mean", "accuracy_std", "best_threshold", "auc", "eer", "tar_at_far", "n_genuine", "n_impostor", "fte")


def compose_eval(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("eval", overrides=overrides)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("eval")
    proc = subprocess.run(
        [sys.executable, "-m", "fetoolkit.eval", "model=arcface", "dataset=orl", f"hydra.run.dir={out}"],
        capture_output=True, text=True, cwd=REPO, timeout=900,
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

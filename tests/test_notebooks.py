"""Notebooks execute headless and are stored without outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks() -> None:
    assert any(p.name == "threshold_tuning.ipynb" for p in NOTEBOOKS)


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_without_outputs(nb: Path) -> None:
    cells = json.loads(nb.read_text())["cells"]
    dirty = [
        i for i, c in enumerate(cells) if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))
    ]
    assert not dirty, f"{nb.name}: cells {dirty} carry outputs; strip them before committing"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_executes(nb: Path, tmp_path: Path) -> None:
    out = tmp_path / nb.name
    jupyter_execute = Path(sys.executable).with_name("jupyter-execute")
    proc = subprocess.run(
        [str(jupyter_execute), str(nb), f"--output={out}"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=900,
        env={**os.environ, "NOTEBOOK_OUT": str(tmp_path / "run")},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    executed = json.loads(out.read_text())
    images = sum(1 for c in executed["cells"] for o in c.get("outputs", []) if "image/png" in o.get("data", {}))
    assert images >= 2, "the FAR/FRR and score plots did not render"


@pytest.mark.slow
def test_threshold_notebook_follows_any_run_and_a_second_run(orl, tmp_path: Path) -> None:
    """An identity-folder run (ORL subjects 1-10) as the input, another (subjects 11-20) as the second
    data set: the notebook names them, and measures the first run's threshold on the second."""
    import shutil

    from hydra import compose, initialize_config_dir

    from fetoolkit.eval_run import run

    runs = {}
    for name, subjects in (("first", range(0, 10)), ("second", range(10, 20))):
        root = tmp_path / f"faces_{name}"
        for k in subjects:
            (root / f"p{k}").mkdir(parents=True)
            for j in range(10):
                shutil.copy(orl.paths[10 * k + j], root / f"p{k}" / f"{j}.pgm")
        with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
            cfg = compose(
                "eval",
                overrides=[
                    "model=arcface",
                    "dataset=folder",
                    f"dataset.root={root}",
                    f"dataset.label=orl_{name}",
                    "stats.n_boot=0",
                    "pipeline.progress=false",
                ],
            )
        runs[name] = tmp_path / f"run_{name}"
        run(cfg, runs[name])
    nb = REPO / "notebooks" / "threshold_tuning.ipynb"
    out = tmp_path / "executed.ipynb"
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("jupyter-execute")), str(nb), f"--output={out}"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=900,
        env={**os.environ, "RUN_DIR": str(runs["first"]), "SECOND_RUN": str(runs["second"])},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = "".join(
        "".join(o.get("text", "")) for c in json.loads(out.read_text())["cells"] for o in c.get("outputs", [])
    )
    assert "on orl_first:" in text and "ORL" not in text.replace("orl_", "")
    assert "orl_first, target FAR 0.001: threshold" in text  # 4,500 impostors measure 1e-3
    assert "on orl_second (arcface_mbf.sirius, run_second) at the orl_first threshold" in text

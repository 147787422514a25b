"""The ``fetoolkit`` console script, as installed by ``make setup`` (``[project.scripts]``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(sys.executable).parent / "fetoolkit"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_the_script_lists_runs_and_refuses_jobs() -> None:
    assert SCRIPT.is_file(), "the console script is missing: `make setup` (pip install -e .) installs it"
    listing = _run()
    assert listing.returncode == 2 and "jobs: bench" in listing.stderr and " eval " in listing.stderr
    assert "cli" not in listing.stderr.split("jobs:")[1].split()
    unknown = _run("evaluate")
    assert unknown.returncode == 2 and "no job 'evaluate'" in unknown.stderr


def test_a_hydra_job_gets_its_arguments() -> None:
    """``fetoolkit eval --cfg job model=...`` is Hydra's own config print of the eval job."""
    done = _run("eval", "--cfg", "job", "model=mobilefacenet512", "dataset=orl")
    assert done.returncode == 0, done.stderr
    assert "name: mobilefacenet512" in done.stdout and "align: true" in done.stdout


def test_every_job_writes_where_the_shared_dirs_group_says(tmp_path: Path) -> None:
    """One run/sweep folder pattern for every Hydra job (configs/hydra/dirs/fetoolkit.yaml), named by
    the job and its ``run_name``; no job config overrides it."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    configs = Path(__file__).resolve().parents[1] / "configs"
    expected = {
        "eval": "arcface_mbf.sirius-torch-orl",
        "parity": "arcface_mbf.sirius-fp32",
        "export": "arcface_mbf.sirius-fp32",
        "serve": "arcface_mbf.sirius-onnx",
    }
    for job, run_name in expected.items():
        with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
            cfg = compose(job, return_hydra_config=True)
        h = cfg.hydra
        assert OmegaConf.to_container(h.run, resolve=False)["dir"] == (
            "outputs/${hydra.job.config_name}/${now:%Y-%m-%d}/${now:%H-%M-%S}-${run_name}"
        ), job
        assert h.run.dir.startswith(f"outputs/{job}/") and h.run.dir.endswith(f"-{run_name}"), h.run.dir
        assert h.sweep.dir.startswith(f"multirun/{job}/"), h.sweep.dir
        assert OmegaConf.to_container(h.sweep, resolve=False)["subdir"] == "${hydra.job.num}-${run_name}", job
        assert cfg.run_name == run_name and h.job.chdir is False, job

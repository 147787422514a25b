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

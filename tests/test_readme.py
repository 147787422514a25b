"""The README's commands, as written: every module exists, every Hydra command composes with its
settings (no misspelt key, no unknown group choice), every make target exists, every service
example uses a route the app has.

This does not execute commands that need data from outside the project (``/data/...``), a
running server or docker; the jobs themselves are tested elsewhere on real faces.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from fetoolkit.cli_args import check_overrides

REPO = Path(__file__).resolve().parents[1]
HYDRA_JOBS = {"eval", "parity", "export", "serve", "extract"}


def readme_commands() -> list[str]:
    """Every command line of the README's bash blocks (continuations joined, comments cut)."""
    text = (REPO / "README.md").read_text()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = re.split(r"\s+#", line)[0].strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out


COMMANDS = readme_commands()


def _python_module_calls() -> list[tuple[str, list[str]]]:
    calls = []
    for line in COMMANDS:
        m = re.search(r"python -m (fetoolkit[\w.]*)(.*)$", line)
        if m:
            calls.append((m.group(1), shlex.split(m.group(2))))
    return calls


def test_the_readme_has_commands() -> None:
    assert len(COMMANDS) > 40 and len(_python_module_calls()) > 25


@pytest.mark.parametrize("module", sorted({m for m, _ in _python_module_calls()}))
def test_every_module_exists(module: str) -> None:
    assert importlib.util.find_spec(module) is not None, f"README names python -m {module}, which does not exist"


def _hydra_calls() -> list[tuple[str, list[str]]]:
    return [(m.split(".")[1], a) for m, a in _python_module_calls() if m.count(".") == 1 and m[10:] in HYDRA_JOBS]


@pytest.mark.parametrize("job,args", _hydra_calls(), ids=lambda x: x if isinstance(x, str) else " ".join(x))
def test_every_hydra_command_composes(job: str, args: list[str]) -> None:
    """The settings of the README's eval/parity/export/serve commands: known keys (the job's own
    check) and a config Hydra composes (a sweep: its first choice of every swept setting)."""
    settings = [a for a in args if a != "-m"]
    check_overrides(job, settings)
    first = []
    for o in OverridesParser.create().parse_overrides([a for a in settings if not a.startswith("hydra.")]):
        value = next(iter(o.sweep_string_iterator())) if o.is_sweep_override() else o.get_value_element_as_str()
        first.append(f"{'+' if o.is_add() else ''}{o.key_or_group}={value}")
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(job, overrides=first)
    assert cfg is not None


def test_every_make_target_exists() -> None:
    targets = set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), flags=re.M))
    named = {m for line in COMMANDS for m in re.findall(r"(?:^|\s)make ([\w-]+)", line)}
    assert named and named <= targets, f"README names make targets the Makefile lacks: {sorted(named - targets)}"


def test_every_service_example_uses_a_route_the_app_has() -> None:
    source = "".join(p.read_text() for p in (REPO / "fetoolkit" / "serve").glob("*.py"))
    routes = set(re.findall(r'"(/api/[\w-]+|/metrics)"', source)) | {"/openapi.json"}  # FastAPI's schema
    used = {u for line in COMMANDS if "curl" in line for u in re.findall(r"http://127\.0\.0\.1:8002(/[\w/.-]+)", line)}
    assert used and used <= routes, f"README curls routes the service lacks: {sorted(used - routes)}"


@pytest.mark.slow
def test_quick_commands_run_as_written(tmp_path: Path) -> None:
    """The README's one-line jobs that need no outside data, run by bash as written in a folder holding
    the files they name (a.jpg, b.jpg: two photos of one person; photos/: the four wild photos)."""
    import shutil
    import subprocess

    import pandas as pd

    from fetoolkit.data.wild import load_wild

    wild = load_wild()
    shutil.copy(wild["obama.jpg"], tmp_path / "a.jpg")
    shutil.copy(wild["obama2.jpg"], tmp_path / "b.jpg")
    (tmp_path / "photos").mkdir()
    for name, src in wild.items():
        shutil.copy(src, tmp_path / "photos" / name)
    import sys

    (tmp_path / ".venv").symlink_to(REPO / ".venv" if (REPO / ".venv").is_dir() else Path(sys.prefix))
    quick = [c for c in COMMANDS if re.search(r"python -m fetoolkit\.(verify|embed) ", c) and "outputs/" not in c]
    assert len(quick) >= 2, quick
    for line in quick:
        proc = subprocess.run(["bash", "-c", line], capture_output=True, text=True, cwd=tmp_path, timeout=600)
        assert proc.returncode == 0, (line, proc.stderr[-2000:])
        if "fetoolkit.verify" in line:
            assert "same person" in proc.stdout, proc.stdout
    rows = pd.read_parquet(tmp_path / "faces.parquet")
    assert set(rows["path"].map(lambda p: Path(p).name)) == set(wild) and len(rows) >= len(wild)

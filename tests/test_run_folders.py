"""Run folders that cannot mix (issue 37, finding 2) and writes that fail loudly (finding 6), on real
ORL faces: two runs never share a folder, a finished or half-written folder is never reused, a
run killed at its final rename leaves nothing a reader takes for a run, every reader of a run
checks that it finished, and a full disk or a file-size limit names the file after the figures
were printed."""

from __future__ import annotations

import errno
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest

from fetoolkit import results
from fetoolkit.data.scores import ScoreFileError, load_scores
from fetoolkit.eval_run import run
from fetoolkit.onecall import load_run
from fetoolkit.reports import plots
from fetoolkit.reports.compare import collect, find_runs
from fetoolkit.results import ResultsError
from fetoolkit.run_dir import LOCK_FILE, RunFolderError, claim
from tests.test_eval import compose_eval

REPO = Path(__file__).resolve().parents[1]


def _overrides(orl8: Path, *extra: str) -> list[str]:
    return [
        "model=arcface",
        "dataset=folder",
        f"dataset.root={orl8}",
        "dataset.n_folds=2",
        "stats.n_boot=0",
        "pipeline.progress=false",
        *extra,
    ]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, orl8: Path) -> Path:
    """A finished eval run folder (never modified: tests work on copies)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    run(compose_eval(_overrides(orl8)), out)
    return out


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _eval_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fetoolkit.eval", *args]


# ----------------------------------------------------------------------------------------
# Finding 2: a run folder is one run's
# ----------------------------------------------------------------------------------------


def test_two_evals_given_one_run_folder_do_not_both_succeed(orl8: Path, tmp_path: Path) -> None:
    """The issue's fault: two evals with the same ``hydra.run.dir`` at once. One finishes; the other
    is refused (in use, or holding the first's finished run) with exit 2, and the folder holds the
    winner's files and Hydra record only."""
    out = tmp_path / "run"
    procs = {
        label: subprocess.Popen(
            _eval_cli(*_overrides(orl8, f"dataset.label={label}", f"hydra.run.dir={out}")),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for label in ("first", "second")
    }
    streams = {label: p.communicate(timeout=600) for label, p in procs.items()}
    done = {label: (procs[label].returncode, *streams[label]) for label in procs}
    codes = sorted(rc for rc, _, _ in done.values())
    assert codes == [0, 2], {k: (rc, err[-2000:]) for k, (rc, _, err) in done.items()}
    winner = next(k for k, (rc, _, _) in done.items() if rc == 0)
    loser_err = next(err for rc, _, err in done.values() if rc == 2)
    assert str(out) in loser_err and ("in use by another run" in loser_err or "already holds" in loser_err)
    assert "Traceback" not in loser_err
    assert results.load_results(out)["dataset"] == winner
    assert f"dataset.label={winner}" in (out / ".hydra" / "overrides.yaml").read_text()
    assert not (out / LOCK_FILE).exists()


def test_a_folder_in_use_is_refused_before_any_work(orl8: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    errors: list[BaseException] = []

    def second() -> None:
        try:
            run(compose_eval(_overrides(orl8)), out)
        except BaseException as e:  # noqa: BLE001 -- the test inspects whatever the run raised
            errors.append(e)

    with claim(out):  # a run holding the folder (this thread)
        t = threading.Thread(target=second)
        t.start()
        t.join(timeout=300)
    assert len(errors) == 1 and isinstance(errors[0], RunFolderError), errors
    assert "in use by another run" in str(errors[0]) and str(out) in str(errors[0])
    assert results.incomplete_reason(out) is not None and not any(out.iterdir())


def test_a_reused_folder_is_refused_and_left_as_it_was(orl8: Path, finished: Path, tmp_path: Path) -> None:
    """A second run into a finished folder (another set-up: its EER, plots and pairs would sit beside
    or replace the first's) is refused naming the files; so is a folder holding the stale plots and
    pair table of a run that never finished. Nothing in either folder changes."""
    reused = tmp_path / "finished"
    shutil.copytree(finished, reused)
    before = _snapshot(reused)
    with pytest.raises(RunFolderError, match=r"already holds an earlier run \(results.json\)") as err:
        run(compose_eval(_overrides(orl8, "dataset.n_folds=4")), reused)
    assert str(reused.absolute()) in str(err.value) and "pairs.parquet" in str(err.value)
    assert _snapshot(reused) == before

    stale = tmp_path / "stale"
    stale.mkdir()
    for f in ("pairs.parquet", "erc.png", "profile.json"):
        shutil.copy(finished / f, stale / f)
    with pytest.raises(RunFolderError, match="files of an earlier run: erc.png, pairs.parquet, profile.json"):
        run(compose_eval(_overrides(orl8)), stale)
    assert sorted(p.name for p in stale.iterdir()) == ["erc.png", "pairs.parquet", "profile.json"]


def test_a_run_killed_at_its_final_rename_leaves_nothing_compare_lists(
    orl8: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed between renaming its files in and renaming ``results.json``: no cleanup runs. The
    staging folder it leaves is outside the run folder and holds no ``results.json``; ``compare``
    lists no run; readers name the run folder as unfinished."""

    class Killed(BaseException):
        pass

    replace = results.os.replace

    def killed_at_results(src: object, dst: object) -> None:
        if Path(str(dst)).name == "results.json":
            raise Killed
        replace(src, dst)

    sweep = tmp_path / "sweep"
    out = sweep / "0-arcface"
    with monkeypatch.context() as m:
        m.setattr(results.os, "replace", killed_at_results)
        m.setattr(results.shutil, "rmtree", lambda *a, **k: None)  # a killed process cleans nothing up
        with pytest.raises(Killed):
            run(compose_eval(_overrides(orl8)), out)
    assert not list(sweep.rglob("results.json")), "a staging folder holds a results.json"
    assert find_runs([sweep]) == []
    with pytest.raises(FileNotFoundError, match="no complete results.json"):
        collect([sweep], tmp_path / "cmp")
    with pytest.raises(ScoreFileError, match="not a finished eval run"):
        load_scores(out)
    # the leftover staging folder of a killed run is removed when its folder is next claimed
    shutil.rmtree(out)
    assert list(sweep.glob(".0-arcface.writing-*"))
    run(compose_eval(_overrides(orl8)), out)
    assert not list(sweep.glob(".0-arcface.writing-*")) and results.incomplete_reason(out) is None


def test_compare_never_lists_a_staging_leftover(finished: Path, tmp_path: Path) -> None:
    """Staging folders of a killed run, inside the run folder (fetoolkit before round 3) or beside
    it, holding a finished-looking ``results.json``: compare lists the one real run only."""
    sweep = tmp_path / "sweep"
    shutil.copytree(finished, sweep / "0-run")
    shutil.copytree(finished, sweep / "0-run" / ".writing-x1")
    shutil.copytree(finished, sweep / ".1-run.writing-x2")
    assert find_runs([sweep]) == [sweep / "0-run"]
    assert len(pd.read_csv(collect([sweep], tmp_path / "cmp")["csv"])) == 1


def test_every_reader_refuses_an_unfinished_run_naming_it(orl8: Path, finished: Path, tmp_path: Path) -> None:
    """A run folder without ``"complete": true`` (or without results.json beside its pair table)
    given to ``dataset=scores`` (folder or pairs.parquet), ``threshold.dev=`` or ``load_run``: each
    refuses it naming the folder and why. The pair table copied out alone is still a score file."""
    unfinished = tmp_path / "unfinished"
    shutil.copytree(finished, unfinished)
    res = json.loads((unfinished / "results.json").read_text())
    del res["complete"]
    (unfinished / "results.json").write_text(json.dumps(res))
    killed = tmp_path / "killed"  # killed before its results.json was renamed in
    shutil.copytree(finished, killed)
    (killed / "results.json").unlink()
    for folder, why in ((unfinished, 'no "complete": true'), (killed, "no such file")):
        for given in (folder, folder / "pairs.parquet"):
            with pytest.raises(ScoreFileError, match="not a finished eval run") as err:
                load_scores(given)
            assert str(folder) in str(err.value) and why in str(err.value)
        refused = f"{re.escape(str(folder))} is not a finished eval run"
        with pytest.raises(ScoreFileError, match=refused):
            run(compose_eval(_overrides(orl8, f"threshold.dev={folder}")), None)
        with pytest.raises(ScoreFileError, match=refused):
            run(compose_eval(["dataset=scores", f"dataset.path={folder}", "stats.n_boot=0"]), None)
        with pytest.raises(ResultsError, match=why):
            load_run(folder)
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(finished / "pairs.parquet", alone / "pairs.parquet")
    assert len(load_scores(alone / "pairs.parquet").roc) == len(load_scores(finished).roc) > 0


# ----------------------------------------------------------------------------------------
# Finding 6: a failed write names its file, after the figures were printed
# ----------------------------------------------------------------------------------------


def test_a_full_disk_names_the_file_and_the_figures_were_logged(
    orl8: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def full_disk(curves: object, path: Path, **kwargs: object) -> None:
        Path(path).write_bytes(b"\x89PNG half")  # a write that fills the disk names no file
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(plots, "plot_det", full_disk)
    out = tmp_path / "run"
    with caplog.at_level("INFO"), pytest.raises(OSError, match="No space left") as err:
        run(compose_eval(_overrides(orl8)), out)
    assert f"could not write {out.absolute() / 'det.png'}" in str(err.value)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "EER" in logged and "2-fold accuracy" in logged, "the computed figures were not printed"
    assert sorted(p.name for p in out.iterdir()) == [] and not list(tmp_path.glob(".run.writing-*"))


def test_a_file_size_limit_ends_the_eval_with_one_line_and_exit_2(orl8: Path, tmp_path: Path) -> None:
    """The eval command under ``ulimit -f`` (24 KB: the pair table fits, the ROC plot does not):
    exit 2, one error line naming the file, the figures on the console, nothing in the folder."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (24_000, 24_000))

    out = tmp_path / "run"
    proc = subprocess.run(
        _eval_cli(*_overrides(orl8, "cache.enabled=false", f"hydra.run.dir={out}")),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=limit,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"could not write {out}/" in errors[0] and "File too large" in errors[0], errors
    named = errors[0].split(f"could not write {out}/")[1].split(":")[0]
    assert named in {"roc.png", "det.png", "scores.png", "erc.png", "reliability.png", "tippett.png"}, named
    assert "EER" in proc.stdout + proc.stderr and "2-fold accuracy" in proc.stdout + proc.stderr
    assert results.incomplete_reason(out) is not None
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["eval.log"]


def test_a_run_folder_named_with_dotdot_is_claimed_once(orl8: Path, tmp_path: Path) -> None:
    """Review: ``hydra.run.dir=a/../x``: Hydra's callback and the eval's own claim name one folder
    (``os.path.abspath``), so the eval does not refuse its own folder as "in use by another run"."""
    (tmp_path / "a").mkdir()
    out = tmp_path / "x"
    proc = subprocess.run(
        _eval_cli(*_overrides(orl8, f"hydra.run.dir={tmp_path / 'a' / '..' / 'x'}")),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "results.json").is_file() and not (out / LOCK_FILE).exists()


def test_summary_md_is_renamed_in_first_and_results_json_last(
    orl8: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review: a kill between two renames must never leave a pairs.parquet without its summary.md
    beside it (the mark by which dataset=scores knows a run's table and asks for results.json)."""
    import fetoolkit.results as results_module

    order: list[str] = []
    real = os.replace

    def spy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        order.append(Path(dst).name)
        real(src, dst)

    monkeypatch.setattr(results_module.os, "replace", spy)
    run(compose_eval(_overrides(orl8)), tmp_path / "run")
    assert order[0] == "summary.md" and order[-1] == "results.json" and "pairs.parquet" in order, order

"""The regression gate: the unchanged pipeline passes, the perturbations fail with a table."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fetoolkit.jobs import gate

REPO = Path(__file__).resolve().parents[1]
BASELINE = REPO / "eval" / "baselines" / "arcface-torch-orl.json"


def test_bits_round_trip() -> None:
    d = np.random.default_rng(0).random(79_801) > 0.5
    bits, digest = gate.pack_bits(d)
    assert np.array_equal(gate.unpack_bits(bits, len(d)), d)
    assert digest != gate.pack_bits(~d)[1]


def test_check_flags_drop_and_passes_improvement() -> None:
    labels = np.r_[np.ones(50, bool), np.zeros(950, bool)]
    base_accept = labels.copy()
    base_accept[:5] = False  # baseline misses 5 genuine pairs
    bits, digest = gate.pack_bits(base_accept)
    wild = np.eye(4, 8, dtype=np.float32)
    baseline = {
        "name": "t",
        "figures": {"accuracy_mean": 0.99, "eer": 0.01, "tar_at_far_1e-3": 0.9},
        "tolerances": {},
        "decisions": {"threshold": 0.5, "n": 1000, "sha256": digest, "bits": bits},
        "wild_embeddings": wild.tolist(),
    }
    better = {"accuracy_mean": 0.999, "eer": 0.001, "tar_at_far": {"1e-3": 0.99}}
    rows = gate.check(baseline, better, labels.copy(), labels, wild)
    assert not [r for r in rows if r.status == "FAIL"]
    assert {r.check for r in rows if r.status == "improved"} >= {"accuracy_mean", "eer", "tar_at_far_1e-3"}

    worse_accept = base_accept.copy()
    worse_accept[5:40] = False  # 35 more genuine pairs rejected
    worse = {"accuracy_mean": 0.95, "eer": 0.05, "tar_at_far": {"1e-3": 0.5}}
    rows = gate.check(baseline, worse, worse_accept, labels, wild[:, ::-1])
    failed = {r.check for r in rows if r.status == "FAIL"}
    assert {"accuracy_mean", "eer", "tar_at_far_1e-3", "wild photos: min cosine to baseline"} <= failed
    assert any(c.startswith("McNemar") for c in failed)


def test_hter_difference_uses_the_same_subjects_for_both() -> None:
    from fetoolkit.metrics.paired import decision_hter_difference

    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(200, bool), np.zeros(4000, bool)]
    sa = np.r_[np.arange(200) % 40, rng.integers(0, 40, 4000)]
    sb = np.r_[np.arange(200) % 40, (sa[200:] + rng.integers(1, 40, 4000)) % 40]
    base = labels.copy()
    base[:10] = False  # FNMR 10/200
    base[200:220] = True  # FMR 20/4000
    same, (lo, hi) = decision_hter_difference(base, base.copy(), labels, (sa, sb), n_boot=200)
    assert same == 0.0 and lo == hi == 0.0
    worse = base.copy()
    worse[10:50] = False  # 40 more genuine pairs rejected: FNMR 50/200
    diff, (lo, hi) = decision_hter_difference(base, worse, labels, (sa, sb), n_boot=200)
    assert diff == pytest.approx(0.5 * (50 - 10) / 200)  # FMR unchanged
    assert 0 < lo < diff < hi
    baseline_rows = gate.check(
        {
            "name": "t",
            "figures": {"accuracy_mean": 0.99, "eer": 0.01, "tar_at_far_1e-3": 0.9},
            "tolerances": {},
            "decisions": {"threshold": 0.5, "n": len(labels), "sha256": "x", "bits": gate.pack_bits(base)[0]},
            "wild_embeddings": np.eye(4, 8).tolist(),
        },
        {"accuracy_mean": 0.99, "eer": 0.01, "tar_at_far": {"1e-3": 0.9}},
        worse,
        labels,
        np.eye(4, 8, dtype=np.float32),
        (sa, sb),
    )
    row = next(r for r in baseline_rows if r.check.startswith("HTER difference"))
    assert row.status == "worse" and row.current.startswith("+0.1000")


def run_gate(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    bdir = tmp_path / "baselines"
    bdir.mkdir(exist_ok=True)
    shutil.copy(BASELINE, bdir)
    return subprocess.run(
        [sys.executable, "-m", "fetoolkit.gate", "--baselines", str(bdir), "--out", str(tmp_path / "out"), *overrides],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=900,
    )


@pytest.fixture(scope="module")
def committed_baseline() -> dict:
    assert BASELINE.is_file(), "run `make gate-update REASON=...` to create the baselines"
    b = json.loads(BASELINE.read_text())
    assert b["figures"]["accuracy_mean"] >= 0.993  # the baseline itself meets the foundation's bar
    return b


@pytest.mark.slow  # .ci/run runs `make gate` itself right after the default suite
def test_unchanged_pipeline_passes(committed_baseline: dict, tmp_path: Path) -> None:
    proc = run_gate(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "FAIL" not in proc.stdout and "accuracy_mean" in proc.stdout


@pytest.mark.parametrize(  # one perturbation in the default run, both in make test-slow
    "perturb,moved",
    [("no_align", "accuracy_mean"), pytest.param("bgr", "wild photos", marks=pytest.mark.slow)],
)
def test_perturbation_fails_with_table(committed_baseline: dict, tmp_path: Path, perturb: str, moved: str) -> None:
    proc = run_gate(tmp_path, f"+perturb={perturb}")
    assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
    failed_lines = [line for line in proc.stdout.splitlines() if line.rstrip().endswith("FAIL")]
    assert any(moved in line for line in failed_lines), proc.stdout
    report = json.loads((tmp_path / "out" / "gate.json").read_text())
    assert report["passed"] is False and report["overrides"] == [f"+perturb={perturb}"]


# ----------------------------------------------------------------------------------------
# The gate trusts nothing it reads: each baseline is validated before any eval runs
# ----------------------------------------------------------------------------------------


def test_committed_baselines_validate() -> None:
    for path in sorted(gate.BASELINES.glob("*.json")):
        assert gate.validate_baseline(path)["name"] == path.stem


def _zero_bits(b: dict) -> None:
    n = b["decisions"]["n"]
    b["decisions"]["bits"] = gate.pack_bits(np.zeros(n, bool))[0]  # the stored sha256 is kept


@pytest.mark.parametrize(
    ("breakage", "field"),
    [
        (_zero_bits, "decisions.bits"),
        (lambda b: b["decisions"].update(n=b["decisions"]["n"] + 9), "decisions.bits"),
        (lambda b: b["figures"].update(eer=1.7), "figures.eer"),
        (lambda b: b["figures"].pop("accuracy_mean"), "figures.accuracy_mean"),
        (lambda b: b["decisions"].update(threshold="0.4"), "decisions.threshold"),
        (lambda b: b.pop("overrides"), "overrides"),
        (lambda b: b["wild_embeddings"][0].__setitem__(0, 5.0), "wild_embeddings"),
        (lambda b: b["tolerances"].update(eer=-1), "tolerances.eer"),
        (lambda b: b.pop("model"), "model"),
        (lambda b: b.update(weights_sha256=3), "weights_sha256"),
    ],
)
def test_a_broken_baseline_fails_naming_file_and_field(tmp_path: Path, breakage, field: str) -> None:
    b = json.loads(BASELINE.read_text())
    breakage(b)
    path = tmp_path / BASELINE.name
    path.write_text(json.dumps(b))
    with pytest.raises(gate.BaselineError) as err:
        gate.validate_baseline(path)
    assert str(path) in str(err.value) and f": {field}:" in str(err.value), str(err.value)


def test_gate_refuses_truncated_baseline_before_any_eval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(BASELINE, tmp_path / "a-good.json")
    bad = tmp_path / "b-truncated.json"
    bad.write_text(BASELINE.read_text()[:500])
    called: list[str] = []
    monkeypatch.setattr(gate, "evaluate_gate", lambda *a, **k: called.append("eval"))
    assert gate.main(["--baselines", str(tmp_path), "--out", str(tmp_path / "out")]) == 1
    assert not called, "an eval ran before every baseline was validated"
    assert any(str(bad) in r.getMessage() and "not readable JSON" in r.getMessage() for r in caplog.records)


# ----------------------------------------------------------------------------------------
# The gate cannot be fooled by its own update, nor by a baseline of something else (issue 37, finding 4)
# ----------------------------------------------------------------------------------------


def test_update_with_overrides_is_refused_and_the_baseline_kept(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``--update +perturb=no_align`` would store the no-align figures under the plain overrides
    (and the real pipeline would then pass as "improved"): refused before any eval, file untouched."""
    bdir = tmp_path / "baselines"
    bdir.mkdir()
    shutil.copy(BASELINE, bdir)
    before = (bdir / BASELINE.name).read_bytes()
    args = ["--baselines", str(bdir), "--out", str(tmp_path / "out"), "--update", "--reason", "try"]
    with pytest.raises(SystemExit) as done:
        gate.main([*args, "+perturb=no_align"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "--update takes no overrides" in err and "+perturb=no_align" in err
    assert (bdir / BASELINE.name).read_bytes() == before and not (tmp_path / "out").exists()


def test_a_baseline_of_another_model_fails_naming_each_difference(
    tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    """mobilefacenet512's baseline with arcface's overrides: the gate runs arcface and must say the
    baseline measured another model (and weights), not "min cosine nan" or a figure drop."""
    b = json.loads((gate.BASELINES / "mobilefacenet512-torch-orl.json").read_text())
    b["overrides"] = ["model=arcface", "backend=torch", "dataset=orl"]
    bdir = tmp_path / "baselines"
    bdir.mkdir()
    (bdir / "mobilefacenet512-torch-orl.json").write_text(json.dumps(b))
    assert gate.main(["--baselines", str(bdir), "--out", str(tmp_path / "out")]) == 1
    table = capsys.readouterr().out
    failed = {line.split()[1]: line for line in table.splitlines() if line.rstrip().endswith("FAIL")}
    assert set(failed) == {"model", "weights_sha256"}, table
    assert "mobilefacenet512" in failed["model"] and "arcface_mbf.sirius" in failed["model"]
    assert b["weights_sha256"] in failed["weights_sha256"]
    assert "nan" not in table and "wild photos" not in table
    assert any(
        "mobilefacenet512-torch-orl model mobilefacenet512 -> arcface_mbf.sirius" in r.getMessage()
        for r in caplog.records
    )

"""The one-call API (``fetoolkit.embed`` / ``verify`` / ``load_run``) and the quick commands, on real faces.

The one-call answers are checked against the layered API they are built from (detect -> align ->
embed), and a run's threshold against the metric functions on the run's own pairs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import fetoolkit
from fetoolkit.data.wild import load_group_photo, load_wild
from fetoolkit.imageio import read_image
from fetoolkit.metrics import verification as vm
from fetoolkit.serve import hostile

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wild() -> dict[str, Path]:
    return load_wild()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_embed_in_one_call_equals_the_layered_api(wild: dict[str, Path]) -> None:
    faces = fetoolkit.embed(wild["obama.jpg"])
    assert len(faces) == 1
    image = read_image(wild["obama.jpg"])
    det = fetoolkit.detect(image, detector="yunet")[0]
    crop = fetoolkit.align(image, det.landmarks)
    want = fetoolkit.create_embedder("arcface").embed(crop[None])[0]
    f = faces[0]
    np.testing.assert_array_equal(f.embedding, want)
    np.testing.assert_array_equal(f.box, det.box)
    assert f.score == pytest.approx(det.score) and 0.0 < f.quality <= 1.0 and f.crop.shape == (112, 112, 3)
    same_bytes = fetoolkit.embed(wild["obama.jpg"].read_bytes())[0]
    np.testing.assert_array_equal(same_bytes.embedding, want)


def test_every_face_and_no_face(tmp_path: Path) -> None:
    group = fetoolkit.embed(load_group_photo(), all_faces=True)
    assert len(group) == 6
    assert [g.score for g in group] == sorted((g.score for g in group), reverse=True)
    blank = tmp_path / "blank.png"
    blank.write_bytes(hostile.png_bytes(np.full((200, 200, 3), 128, np.uint8)))
    with pytest.raises(fetoolkit.NoFaceError, match="blank.png"):
        fetoolkit.embed(blank)


def test_verify_says_where_its_threshold_came_from(wild: dict[str, Path]) -> None:
    v = fetoolkit.verify(wild["obama.jpg"], wild["obama2.jpg"])
    assert v.same and v.threshold == 0.5 and "arcface_mbf.sirius" in v.threshold_source
    e1, e2 = (fetoolkit.embed(wild[n])[0].embedding for n in ("obama.jpg", "obama2.jpg"))
    assert v.score == pytest.approx(float(e1 @ e2), abs=1e-6)
    other = fetoolkit.verify(wild["obama.jpg"], wild["biden.jpg"], threshold=0.3)
    assert other.threshold_source == "given" and other.same == (other.score >= 0.3)
    with pytest.raises(ValueError, match="no default threshold"):
        fetoolkit.verify(wild["obama.jpg"], wild["biden.jpg"], model="mobilefacenet512")
    with pytest.raises(ValueError, match="not both"):
        fetoolkit.verify(wild["obama.jpg"], wild["biden.jpg"], threshold=0.5, run="somewhere")


def test_a_runs_threshold_with_its_interval_scores_new_pairs(tmp_path: Path, wild: dict[str, Path]) -> None:
    """A score run (``dataset=scores``) made by the eval command; its threshold at FAR 1e-2 is the one
    the metric functions choose on its pairs, and ``verify(run=...)`` applies it."""
    rng = np.random.default_rng(5)
    labels = rng.random(4000) < 0.2
    scores = np.round(rng.normal(0.1, 0.12, 4000) + 0.55 * labels, 4)
    pd.DataFrame({"label": labels.astype(int), "score": scores}).to_csv(tmp_path / "s.csv", index=False)
    run = tmp_path / "run"
    done = _cli(
        "fetoolkit.eval",
        "dataset=scores",
        f"dataset.path={tmp_path / 's.csv'}",
        "stats.n_boot=0",
        f"hydra.run.dir={run}",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    t = fetoolkit.load_run(run).threshold(far=1e-2)
    want = vm.tar_at_far(scores, labels, 1e-2)
    assert t.value == want.threshold and t.achieved_far == want.achieved_far and t.frr == pytest.approx(1 - want.tar)
    assert t.interval is not None and t.interval[0] <= t.value <= t.interval[1]
    assert t.n_impostor == int((~labels).sum()) and str(run) in t.describe()
    np.testing.assert_array_equal(t.accept(scores), scores >= t.value)
    v = fetoolkit.verify(wild["obama.jpg"], wild["obama2.jpg"], run=run, far=1e-2)
    assert v.threshold == t.value and str(run) in v.threshold_source
    with pytest.raises(ValueError, match="coarser"):
        fetoolkit.load_run(run).threshold(far=1e-5)


def test_the_threshold_interval_agrees_with_a_brute_force_bootstrap() -> None:
    rng = np.random.default_rng(8)
    y = rng.random(3000) < 0.3
    s = rng.normal(size=3000) + 2.0 * y
    lo, hi = vm.threshold_at_far_ci(s, y, 1e-2, n_boot=2000, seed=1)
    slo, shi = vm.bootstrap_ci(s, y, lambda a, b: vm.threshold_at_far(a, b, 1e-2), n_boot=2000, seed=2)
    assert abs(lo - slo) < 0.05 and abs(hi - shi) < 0.05 and lo < vm.threshold_at_far(s, y, 1e-2) < hi


def test_create_embedder_reads_the_model_from_an_onnx_files_metadata(tmp_path: Path) -> None:
    from fetoolkit.models.factory import exported_onnx, resolve_weights
    from fetoolkit.models.registry import get_model_spec

    spec = get_model_spec("arcface")
    onnx_file = exported_onnx(spec, *resolve_weights(spec, None))
    emb = fetoolkit.create_embedder(weights=onnx_file, backend="onnx")
    assert emb.name == "arcface_mbf.sirius" and emb.contract.embed_dim == 192
    import onnx

    bare = onnx.load(str(onnx_file))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    with pytest.raises(ValueError, match="does not name its model"):
        fetoolkit.create_embedder(weights=tmp_path / "bare.onnx", backend="onnx")
    assert "arcface" in fetoolkit.list_models(aliases=True) and "arcface" not in fetoolkit.list_models()


# ----------------------------------------------------------------------------- the quick commands
def test_verify_and_embed_commands(tmp_path: Path, wild: dict[str, Path]) -> None:
    done = _cli("fetoolkit.verify", str(wild["obama.jpg"]), str(wild["obama2.jpg"]))
    assert done.returncode == 0 and done.stdout.startswith("same person: score"), done.stderr[-2000:]
    typo = _cli("fetoolkit.verify", str(wild["obama.jpg"]), str(wild["obama2.jpg"]), "treshold=0.4")
    assert typo.returncode == 2 and "did you mean 'threshold'" in typo.stderr and "Traceback" not in typo.stderr
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("obama.jpg", "biden.jpg"):
        (folder / name).write_bytes(wild[name].read_bytes())
    (folder / "blank.png").write_bytes(hostile.png_bytes(np.full((120, 120, 3), 200, np.uint8)))
    out = tmp_path / "faces.parquet"
    done = _cli("fetoolkit.embed", str(folder), f"out={out}")
    assert done.returncode == 0, done.stderr[-2000:]
    df = pd.read_parquet(out)
    assert sorted(Path(p).name for p in df["path"]) == ["biden.jpg", "blank.png", "obama.jpg"]
    blank = df[df["path"].str.endswith("blank.png")].iloc[0]
    assert blank["face"] == -1 and "no face" in blank["error"] and blank["embedding"] is None
    ok = df[df["error"].isna()]
    want = fetoolkit.embed(wild["obama.jpg"])[0].embedding
    got = np.asarray(ok[ok["path"].str.endswith("obama.jpg")].iloc[0]["embedding"], np.float32)
    np.testing.assert_array_equal(got, want)


def test_the_command_modules_do_not_shadow_the_functions() -> None:
    """``import fetoolkit.verify`` binds the module to the package's name; it stays callable."""
    import importlib

    importlib.import_module("fetoolkit.verify")
    importlib.import_module("fetoolkit.embed")
    assert callable(fetoolkit.verify) and callable(fetoolkit.embed)
    face = fetoolkit.embed(load_wild()["obama.jpg"])[0]
    assert face.embedding.shape == (192,)


def test_override_check_leaves_what_it_cannot_judge_to_hydra() -> None:
    from fetoolkit.cli_args import UsageError, check_overrides

    for ok in (
        ["-m", "model=choice(arcface,mobilefacenet512)", "seed=1"],
        ["dataset=lfw", "dataset.root=/x", "model.weights=/y.onnx", "threshold.dev=/z"],
        ["model=nonexistent", "seed=1"],  # Hydra names the missing choice itself
        ["--config-dir=/elsewhere", "anything=1"],
        ["hydra.run.dir=/tmp/x", "~cache"],
    ):
        check_overrides("eval", ok)
    with pytest.raises(UsageError, match="did you mean 'stats.n_boot'"):
        check_overrides("eval", ["-m", "model=choice(arcface,sface)", "stats.nboot=5"])


def test_hydra_jobs_refuse_misspelt_settings_in_one_line() -> None:
    for args in (["pipline.align=false"], ["+pipline.align=false"], ["-m", "model=arcface,sface", "datset=orl"]):
        done = _cli("fetoolkit.eval", *args)
        assert done.returncode == 2 and "did you mean" in done.stderr and "Traceback" not in done.stderr, args
    missing = _cli("fetoolkit.eval", "dataset=folder", "dataset.root=/no/such/folder", "hydra.run.dir=/tmp/fetoolkit-x")
    assert missing.returncode == 2 and "/no/such/folder" in missing.stderr and "Traceback" not in missing.stderr
    weights = _cli("fetoolkit.export", "model.weights=/no/such/weights.pth", "hydra.run.dir=/tmp/fetoolkit-y")
    assert weights.returncode == 2 and "/no/such/weights.pth" in weights.stderr and "Traceback" not in weights.stderr

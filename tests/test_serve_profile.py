"""The service with a decision profile (``PROFILE_PATH``), tested the way users run it.

The profiles are made by real eval runs on ORL (``python -m fetoolkit.eval ... detector=yunet
backend=onnx``; the embeddings are cached, so each takes seconds), the server is the real
``python -m fetoolkit.serve`` process on a loopback port (``fetoolkit.serve.process``), and the
photos are real: ORL's and the colour photos of ``face_recognition``'s sdist. A profile made for
another model, or a damaged one, must stop the process before it serves.
"""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from fetoolkit.data.sources import load_orl
from fetoolkit.data.wild import load_wild
from fetoolkit.decision.profile import DecisionProfile, load_profile
from fetoolkit.models.registry import get_model_spec
from fetoolkit.serve import process as serve_process
from fetoolkit.serve.decide import ALIGNED_WARNING, default_fmr
from fetoolkit.serve.errors import ErrorType
from fetoolkit.serve.observe import LLR_BUCKETS, SCORE_BUCKETS
from fetoolkit.serve.process import ServerProcess
from fetoolkit.serve.schemas import ErrorResponse, HealthResponse, VerifyResponse
from fetoolkit.serve.settings import ServeSettings

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
#: The service's set-up, the same as the profiles' eval runs (YuNet, onnxruntime).
SERVE_ARGS = ["model=arcface", "detector=yunet", "backend=onnx"]
START_TIMEOUT_S = 240.0
EVAL_TIMEOUT_S = 600.0
ARCFACE = get_model_spec("arcface")
MFN512 = get_model_spec("mobilefacenet512")


# ----------------------------------------------------------------------------- profiles and servers
def eval_profile(model: str, run_dir: Path) -> Path:
    """``python -m fetoolkit.eval model=<model> dataset=orl detector=yunet backend=onnx`` -> its profile.json."""
    args = [f"model={model}", "dataset=orl", "detector=yunet", "backend=onnx", "stats.n_boot=0"]
    r = subprocess.run(
        [sys.executable, "-m", "fetoolkit.eval", *args, f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=EVAL_TIMEOUT_S,
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    path = run_dir / "profile.json"
    assert path.is_file(), f"the eval run wrote no {path}"
    return path


@pytest.fixture(scope="module")
def arcface_profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return eval_profile("arcface", tmp_path_factory.mktemp("eval-arcface"))


@pytest.fixture(scope="module")
def mfn_profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return eval_profile("mobilefacenet512", tmp_path_factory.mktemp("eval-mfn512"))


def start(run_dir: Path, env: dict[str, str], overrides: tuple[str, ...] = ()) -> ServerProcess:
    return serve_process.start_server([*SERVE_ARGS, *overrides], run_dir, env=env, timeout=START_TIMEOUT_S, cwd=ROOT)


def refused(run_dir: Path, env: dict[str, str], overrides: tuple[str, ...] = ()) -> str:
    """Start the service and expect it to exit before serving: its exit status must not be 0.
    Returns the process's output (``LOG_LEVEL=info``, so that its start-up lines show)."""
    with pytest.raises(RuntimeError) as info:
        srv = start(run_dir, {"LOG_LEVEL": "info", **env}, overrides)
        srv.stop()  # it served: the test fails below
    m = re.match(r"server exited with (-?\d+)", str(info.value))
    assert m, f"the server did not exit: {info.value}"
    assert int(m.group(1)) != 0, str(info.value)
    out = (run_dir / "server.log").read_text(errors="replace")
    assert "serving fetoolkit-embedding" not in out and "Uvicorn running" not in out, out[-2000:]
    return out


def error_line(out: str) -> str:
    """The one ``error: ...`` line a refused start prints."""
    lines = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, out[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def server(arcface_profile: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The service with the arcface ORL profile (PROFILE_PATH)."""
    srv = start(tmp_path_factory.mktemp("serve-profile"), {"PROFILE_PATH": str(arcface_profile)})
    try:
        yield srv
    finally:
        srv.stop()
    assert srv.proc.returncode is not None


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120.0) as c:
        yield c


@pytest.fixture(scope="module")
def photos() -> dict[str, str]:
    """base64 of real photos: ORL (grey PGM, 92x112) and colour photos in the wild."""
    orl = {p.parent.name + "/" + p.name: p for p in load_orl().paths}
    files = {"orl_s1_1": orl["s1/1.pgm"], "orl_s1_2": orl["s1/2.pgm"], "orl_s2_1": orl["s2/1.pgm"], **load_wild()}
    return {name: base64.b64encode(path.read_bytes()).decode() for name, path in files.items()}


def verify(client: httpx.Client, photos: dict[str, str], a: str, b: str, **fields: object) -> dict:
    r = client.post("/api/verify", json={"image1": photos[a], "image2": photos[b], **fields})
    assert r.status_code == 200, r.text[:500]
    VerifyResponse.model_validate(r.json())
    return r.json()["verification"]


def assert_decision(v: dict, profile: DecisionProfile, *, fmr: float = 1e-3, prior: float | None = None) -> None:
    """The answer's profile fields are what ``DecisionProfile.decide`` says for the score it returned."""
    d = profile.decide(v["score"], fmr=fmr, prior=prior)
    assert v["llr"] == pytest.approx(d.llr, rel=1e-12, abs=1e-12)
    assert v["p_same"] == pytest.approx(d.p_same, rel=1e-12, abs=1e-300)
    assert v["prior"] == pytest.approx(d.prior, rel=1e-12)
    assert v["is_same_person"] is d.same and v["threshold"] == pytest.approx(d.threshold, rel=1e-12)
    assert v["threshold_source"] == "profile" and v["fmr"] == pytest.approx(fmr, rel=1e-12)
    assert v["profile_id"] == profile.profile_id


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of a Prometheus text exposition (labels in any order)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        m = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if got == labels:
            return float(m.group(3))
    raise AssertionError(f"no sample {name}{labels} in /metrics")


# ----------------------------------------------------------------------------- a matching profile
def test_health_names_the_profile(client: httpx.Client, arcface_profile: Path) -> None:
    profile = load_profile(arcface_profile)
    r = client.get("/api/health")
    assert r.status_code == 200, r.text
    HealthResponse.model_validate(r.json())
    p = r.json()["profile"]
    assert p["profile_id"] == profile.profile_id and p["path"] == str(arcface_profile)
    assert p["model"] == ARCFACE.name and p["fmr"] == 1e-3 and p["warnings"] == []
    assert p["threshold"] == profile.threshold(1e-3)["threshold"] and p["fmrs"] == profile.fmrs
    assert p["prior"] == profile.prior
    assert r.json()["model_status"]["weights_sha256"] == profile.model["weights_sha256"]


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("orl_s1_1", "orl_s1_2", True),
        ("orl_s1_1", "orl_s2_1", False),
        ("obama.jpg", "obama2.jpg", True),
        ("obama3.jpg", "biden.jpg", False),
    ],
)
def test_verify_answers_what_the_profile_decides(
    client: httpx.Client, arcface_profile: Path, photos: dict[str, str], a: str, b: str, same: bool
) -> None:
    """ORL photos (the profile's own data set) and colour photos in the wild: llr, p_same, the
    decision at the profile's 1e-3 threshold and the id are ``DecisionProfile.decide``'s."""
    profile = load_profile(arcface_profile)
    v = verify(client, photos, a, b)
    assert_decision(v, profile)
    assert v["warnings"] == [] and v["face1"]["detection_ran"] and v["face2"]["detection_ran"]
    assert v["is_same_person"] is same and (v["llr"] > 0) is same, v


@pytest.mark.parametrize(("a", "b"), [("orl_s1_1", "orl_s1_2"), ("orl_s1_1", "orl_s2_1"), ("obama.jpg", "biden.jpg")])
def test_the_one_call_api_and_the_service_give_one_answer(
    client: httpx.Client, arcface_profile: Path, a: str, b: str
) -> None:
    """Issue 32's must-show: one profile of an ORL run, applied by ``fetoolkit.verify`` (in this
    process: YuNet and the ONNX model, the profile's defaults) and by the service (its own process):
    the same score, llr and decision for the same two photos."""
    import fetoolkit

    orl = {p.parent.name + "/" + p.name: p for p in load_orl().paths}
    files = {"orl_s1_1": orl["s1/1.pgm"], "orl_s1_2": orl["s1/2.pgm"], "orl_s2_1": orl["s2/1.pgm"], **load_wild()}
    here = fetoolkit.verify(files[a], files[b], profile=arcface_profile, fmr=1e-3)
    body = {"image1": base64.b64encode(files[a].read_bytes()).decode(), "image2": ""}
    body["image2"] = base64.b64encode(files[b].read_bytes()).decode()
    r = client.post("/api/verify", json={**body, "fmr": 1e-3})
    assert r.status_code == 200, r.text[:500]
    there = r.json()["verification"]
    # one pipeline, one backend, one map: equal, not close (measured: a difference of exactly 0)
    assert (there["score"], there["llr"], there["p_same"]) == (here.score, here.llr, here.p_same)
    assert (there["is_same_person"], there["profile_id"], there["threshold"]) == (
        here.same,
        here.profile_id,
        here.threshold,
    )


def test_verify_request_fmr_prior_and_threshold(
    client: httpx.Client, arcface_profile: Path, photos: dict[str, str]
) -> None:
    profile = load_profile(arcface_profile)
    v = verify(client, photos, "obama.jpg", "obama2.jpg", fmr=0.1, prior=0.5)
    assert_decision(v, profile, fmr=0.1, prior=0.5)
    own = verify(client, photos, "obama.jpg", "obama2.jpg", threshold=0.99)  # a request threshold still wins
    assert own["threshold"] == 0.99 and own["threshold_source"] == "request" and own["is_same_person"] is False
    assert own["fmr"] is None and own["llr"] == pytest.approx(profile.decide(own["score"]).llr, rel=1e-12)
    assert own["profile_id"] == profile.profile_id
    # multipart: the same fields as text parts
    orl = {
        "image1": ("a.pgm", base64.b64decode(photos["orl_s1_1"])),
        "image2": ("b.pgm", base64.b64decode(photos["orl_s1_2"])),
    }
    r = client.post("/api/verify", files=orl, data={"fmr": "1e-4", "prior": "0.01"})
    assert r.status_code == 200, r.text[:500]
    assert_decision(r.json()["verification"], profile, fmr=1e-4, prior=0.01)
    # an FMR the profile lacks: a typed 422 listing the ones it has, before any work
    r = client.post("/api/verify", json={"image1": photos["obama.jpg"], "image2": photos["obama2.jpg"], "fmr": 0.05})
    assert r.status_code == 422, r.text[:500]
    body = r.json()
    ErrorResponse.model_validate(body)
    assert body["error_type"] == ErrorType.INVALID_INPUT.value and body["details"]["fmrs"] == profile.fmrs
    assert all(f"{f:g}" in body["message"] for f in profile.fmrs), body["message"]
    for bad in (
        {"fmr": 1e-3, "threshold": 0.5},  # two thresholds
        {"fmr": 1.5},
        {"prior": 0.0},
    ):
        r = client.post("/api/verify", json={"image1": photos["obama.jpg"], "image2": photos["obama2.jpg"], **bad})
        assert r.status_code == 422 and r.json()["error_type"] == "INVALID_INPUT", (bad, r.text[:300])
    r = client.post("/api/verify", files=orl, data={"fmr": "0"})
    assert r.status_code == 422 and "fmr" in r.json()["message"], r.text[:300]


def test_aligned_input_is_answered_with_a_warning(
    client: httpx.Client, arcface_profile: Path, photos: dict[str, str]
) -> None:
    """No detection ran on aligned crops: the profile does not vouch for them, and the answer says so."""
    crops = {}
    for name in ("orl_s1_1", "orl_s1_2"):
        img = Image.open(io.BytesIO(base64.b64decode(photos[name]))).convert("RGB").resize((112, 112))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        crops[name] = base64.b64encode(buf.getvalue()).decode()
    v = verify(client, crops, "orl_s1_1", "orl_s1_2", aligned=True)
    assert v["warnings"] == [ALIGNED_WARNING] and not v["face1"]["detection_ran"]
    assert v["llr"] == pytest.approx(load_profile(arcface_profile).decide(v["score"]).llr, rel=1e-12)


def test_metrics_export_score_and_llr_histograms(
    client: httpx.Client, arcface_profile: Path, photos: dict[str, str]
) -> None:
    """/metrics: histograms of the verification cosines (buckets over [-1, 1]) and of the profile's
    LLRs (over [-30, 30]), with the profile's id and dev score deciles beside them."""
    profile = load_profile(arcface_profile)
    before = client.get("/metrics").text
    v = verify(client, photos, "obama.jpg", "obama2.jpg")
    after = client.get("/metrics").text
    assert metric(after, "fetoolkit_verify_score_count") == metric(before, "fetoolkit_verify_score_count") + 1
    assert metric(after, "fetoolkit_verify_llr_count") == metric(before, "fetoolkit_verify_llr_count") + 1
    for name, buckets, value in (
        ("fetoolkit_verify_score_bucket", SCORE_BUCKETS, v["score"]),
        ("fetoolkit_verify_llr_bucket", LLR_BUCKETS, v["llr"]),
    ):
        assert buckets[0] in (-1.0, -30.0) and buckets[-1] in (1.0, 30.0)
        for le in buckets:  # the answer was counted in every bucket at or above it, in none below
            grew = metric(after, name, le=repr(float(le))) - metric(before, name, le=repr(float(le)))
            assert grew == (1.0 if value <= le else 0.0), (name, le, value)
    assert metric(after, "fetoolkit_profile_info", profile_id=profile.profile_id, model=ARCFACE.name, fmr="0.001") == 1
    scores = profile.data["scores"]
    for label in ("genuine", "impostor"):
        for q, s in zip(scores["deciles"], scores[label]):
            assert metric(after, "fetoolkit_profile_score", label=label, quantile=f"{q:.1f}") == pytest.approx(s)
    same = metric(after, "fetoolkit_verify_decisions_total", same="true", source="profile")
    assert same >= 1


# ----------------------------------------------------------------------------- refused at start-up
def test_profile_of_another_model_is_refused_at_start_up(mfn_profile: Path, tmp_path: Path) -> None:
    """A real mobilefacenet512 ORL profile given to the arcface service: the process exits non-zero
    before serving (and before loading the model), one line naming the model and the weights."""
    out = refused(tmp_path, {"PROFILE_PATH": str(mfn_profile)})
    line = error_line(out)
    assert str(mfn_profile) in line, line
    assert f"model: profile {MFN512.name}, here {ARCFACE.name}" in line, line
    assert MFN512.weights.sha256 in line and ARCFACE.weights.sha256 in line, line  # type: ignore[union-attr]
    assert "PROFILE_ALLOW_MISMATCH=1" in line and "detector" not in line.split(". Make")[0], line
    assert "loaded arcface" not in out.lower(), out[-2000:]


def test_mismatching_profile_runs_anyway_when_allowed(
    mfn_profile: Path, photos: dict[str, str], tmp_path: Path
) -> None:
    """PROFILE_ALLOW_MISMATCH=1: the service starts; health and every verify answer carry the differences."""
    profile = load_profile(mfn_profile)
    srv = start(tmp_path, {"PROFILE_PATH": str(mfn_profile), "PROFILE_ALLOW_MISMATCH": "1"})
    try:
        with httpx.Client(base_url=srv.url, timeout=120.0) as c:
            health = c.get("/api/health").json()["profile"]
            warnings = health["warnings"]
            assert health["profile_id"] == profile.profile_id and health["model"] == MFN512.name
            assert any(MFN512.name in w and ARCFACE.name in w for w in warnings), warnings
            assert any(MFN512.weights.sha256 in w for w in warnings), warnings  # type: ignore[union-attr]
            for a, b in (("obama.jpg", "obama2.jpg"), ("orl_s1_1", "orl_s2_1")):
                v = verify(c, photos, a, b)
                assert v["warnings"] == warnings and v["profile_id"] == profile.profile_id
                assert v["llr"] == pytest.approx(profile.decide(v["score"]).llr, rel=1e-12)
    finally:
        srv.stop()


def test_damaged_or_missing_profile_is_refused(arcface_profile: Path, tmp_path: Path) -> None:
    """An edited profile (its id no longer matches its content) and a missing one (named in
    configs/serve.yaml's verify.profile) stop the start, naming the file."""
    data = json.loads(arcface_profile.read_text())
    data["thresholds"]["1e-3"]["threshold"] = 0.1  # a lower threshold, the id left as it was
    damaged = tmp_path / "damaged.json"
    damaged.write_text(json.dumps(data))
    line = error_line(refused(tmp_path / "damaged", {"PROFILE_PATH": str(damaged)}))
    assert str(damaged) in line and "does not match the content" in line, line
    missing = tmp_path / "nowhere" / "profile.json"
    line = error_line(refused(tmp_path / "missing", {}, (f"verify.profile={missing}",)))
    assert str(missing) in line and "no such file" in line, line


# ----------------------------------------------------------------------------- settings, in-process
def test_settings_read_the_profile_from_config_and_environment() -> None:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("serve", overrides=["verify.profile=/a/profile.json", "verify.fmr=0.01"])
        plain = compose("serve")
    s = ServeSettings.from_cfg(plain, environ={})
    assert (s.profile_path, s.profile_allow_mismatch, s.verify_fmr) == (None, False, None)
    s = ServeSettings.from_cfg(cfg, environ={})
    assert (s.profile_path, s.profile_allow_mismatch, s.verify_fmr) == ("/a/profile.json", False, 0.01)
    s = ServeSettings.from_cfg(cfg, environ={"PROFILE_PATH": "/b", "PROFILE_ALLOW_MISMATCH": "1"})
    assert (s.profile_path, s.profile_allow_mismatch) == ("/b", True)  # the environment wins
    assert ServeSettings.from_cfg(cfg, environ={"PROFILE_ALLOW_MISMATCH": "false"}).profile_allow_mismatch is False
    with pytest.raises(ValueError, match="PROFILE_ALLOW_MISMATCH"):
        ServeSettings.from_cfg(cfg, environ={"PROFILE_ALLOW_MISMATCH": "maybe"})
    with pytest.raises(ValueError, match="fmr"):
        replace(s, verify_fmr=1.0)


def test_default_fmr_is_1e3_else_the_finest(arcface_profile: Path) -> None:
    profile = load_profile(arcface_profile)
    assert default_fmr(profile, None) == 1e-3 and default_fmr(profile, 0.01) == 0.01
    with pytest.raises(ValueError, match="no threshold at FMR 0.05"):
        default_fmr(profile, 0.05)
    thresholds = {k: v for k, v in profile.data["thresholds"].items() if k != "1e-3"}
    without = DecisionProfile({**profile.data, "thresholds": thresholds}, profile.calibration, profile.path)
    assert default_fmr(without, None) == min(without.fmrs) == 1e-4


def test_without_a_profile_verify_answers_as_before() -> None:
    """No PROFILE_PATH: the server's threshold decides, the profile's fields are null, and a request
    naming an fmr or a prior is told that they need a profile (in-process app, aligned crops)."""
    from fastapi.testclient import TestClient
    from hydra import compose, initialize_config_dir

    from fetoolkit.serve.app import create_app

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("serve", overrides=SERVE_ARGS)
    s = replace(
        ServeSettings.from_cfg(cfg, environ={}), warmup=False, inference_workers=1, allowed_hosts=("testserver",)
    )
    rng = np.random.default_rng(0)
    faces = []
    for _ in range(2):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)).save(buf, format="PNG")
        faces.append(base64.b64encode(buf.getvalue()).decode())
    app = create_app(s)
    assert app.state.profile is None
    with TestClient(app) as c:
        assert c.get("/api/health").json()["profile"] is None
        r = c.post("/api/verify", json={"image1": faces[0], "image2": faces[1], "aligned": True})
        assert r.status_code == 200, r.text[:300]
        v = r.json()["verification"]
        assert (
            v["threshold"] == 0.5 and v["threshold_source"] == "server" and v["is_same_person"] is (v["score"] >= 0.5)
        )
        assert (v["llr"], v["p_same"], v["prior"], v["fmr"], v["profile_id"], v["warnings"]) == (
            None,
            None,
            None,
            None,
            None,
            [],
        )
        for extra in ({"fmr": 1e-3}, {"prior": 0.5}):
            r = c.post("/api/verify", json={"image1": faces[0], "image2": faces[1], "aligned": True, **extra})
            assert r.status_code == 422 and "PROFILE_PATH" in r.json()["message"], r.text[:300]
        text = c.get("/metrics").text
        assert metric(text, "fetoolkit_verify_score_count") == 1 and metric(text, "fetoolkit_verify_llr_count") == 0

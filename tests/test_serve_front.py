"""The service's front door and parts in-process: deadlines, disconnects, keys, decode budgets.

The app is built by ``create_app`` around a stand-in service whose work only sleeps and records
what it was allowed to start, so deadlines and disconnects are checked without a model; the real
server process is tested in ``test_serve.py`` and ``test_serve_hostile.py``.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from fetoolkit.data.wild import load_wild
from fetoolkit.imageio import SERVICE_BUDGET, DecodeBudget, ImageDecodeError, decode_image, jpeg_scans
from fetoolkit.serve import hostile
from fetoolkit.serve.app import create_app
from fetoolkit.serve.auth import key_matches
from fetoolkit.serve.errors import public_reason
from fetoolkit.serve.settings import ServeSettings, key_digest
from fetoolkit.serve.work import Work


class SlowService:
    """Stands in for ``EmbeddingService``: ``extract`` sleeps ``seconds`` then checks its ticket
    before "the model", counting the model calls it was allowed to start."""

    ready = True

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.model_calls = 0
        self.stopped: list[str] = []
        self.observe = lambda stage, s: None

    def load(self) -> None: ...

    def close(self) -> None: ...

    def model_status(self, details: bool = True) -> dict[str, Any]:
        return {
            "loaded": True,
            "model_name": "stand-in",
            "backend": "none",
            "input_shape": None,
            "embedding_dim": None,
            "contract": None,
            "weights_sha256": "x" if details else None,
        }

    def extract(self, image: Any, aligned: bool, work: Work | None = None) -> Any:
        time.sleep(self.seconds)
        try:
            assert work is not None
            work.check("the model")
        except Exception as e:
            self.stopped.append(type(e).__name__)
            raise
        self.model_calls += 1
        raise RuntimeError("the stand-in has no model")


def _app(seconds: float, **settings: Any) -> tuple[Any, SlowService]:
    svc = SlowService(seconds)
    return create_app(ServeSettings(**settings), service=svc), svc  # type: ignore[arg-type]


BODY = json.dumps({"image": base64.b64encode(b"0123456789abcdefgh").decode(), "aligned": True}).encode()


def test_a_request_past_its_deadline_is_504_and_its_model_stage_never_starts() -> None:
    app, svc = _app(0.6, request_timeout_s=0.2)

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
            r = await c.post("/api/extract-embedding", content=BODY, headers={"Content-Type": "application/json"})
            await asyncio.sleep(0.8)  # the pool thread reaches its check
            return r

    r = asyncio.run(go())
    assert r.status_code == 504 and r.json()["error_type"] == "TIMEOUT", r.text
    assert svc.model_calls == 0 and svc.stopped == ["RequestTimeout"]


def test_work_for_a_client_that_left_is_not_started() -> None:
    """The client disconnects right after its body: the front door marks the ticket, and the work
    stops before the model."""
    app, svc = _app(0.3)
    sent: list[dict[str, Any]] = []

    async def go() -> None:
        messages = [{"type": "http.request", "body": BODY, "more_body": False}, {"type": "http.disconnect"}]

        async def receive() -> dict[str, Any]:
            return messages.pop(0) if messages else await asyncio.sleep(3600)  # type: ignore[return-value]

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/api/extract-embedding",
            "raw_path": b"/api/extract-embedding",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 8002),
        }
        await app(scope, receive, send)

    asyncio.run(go())
    assert svc.model_calls == 0 and svc.stopped == ["ClientGone"]
    assert sent[0]["status"] == 499


def test_keys_hosts_and_the_settings_that_hold_them(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("# service keys\nalpha-key\n\n beta-key \n")
    s = ServeSettings().with_env({"API_KEYS": "gamma-key", "API_KEYS_FILE": str(keys), "ALLOWED_HOSTS": "a.example,b"})
    assert s.auth_required and s.hosts == ("a.example", "b")
    assert "alpha" not in repr(s) and key_digest("alpha-key") in s.api_key_digests
    for k in ("alpha-key", "beta-key", "gamma-key"):
        assert key_matches(k, s.api_key_digests)
    for k in (None, "", "alpha", "alpha-key ", "delta-key"):
        assert not key_matches(k, s.api_key_digests)
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="holds no key"):
        ServeSettings().with_env({"API_KEYS_FILE": str(tmp_path / "empty.txt")})
    with pytest.raises(ValueError, match="cannot be read"):
        ServeSettings().with_env({"API_KEYS_FILE": str(tmp_path / "missing.txt")})
    assert ServeSettings().hosts == ("127.0.0.1", "localhost", "::1") and ServeSettings(host="0.0.0.0").hosts is None
    assert ServeSettings().with_env({"MAX_CONCURRENT_REQUESTS": "500"}).max_connections == 4000


def test_failures_are_told_by_kind_and_reason_without_paths() -> None:
    e = FileNotFoundError("weights not found: /root/.cache/fetoolkit/models/x.onnx\nTraceback (most recent call last)")
    assert public_reason(e) == "FileNotFoundError: weights not found: x.onnx"


# ----------------------------------------------------------------------------- decode budget
def test_jpeg_scans_are_counted_from_the_markers() -> None:
    photo = load_wild()["obama.jpg"].read_bytes()  # a camera JPEG (EXIF segments are skipped)
    assert jpeg_scans(photo) == 1
    rng = np.random.default_rng(1)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), np.uint8)).save(buf, "JPEG", progressive=True)
    assert jpeg_scans(buf.getvalue()) == 10  # libjpeg's standard progressive script
    assert jpeg_scans(hostile.scan_bomb(500)) == 500
    assert jpeg_scans(b"\x89PNG\r\n\x1a\n") == 0
    budget = DecodeBudget(formats=SERVICE_BUDGET.formats, max_jpeg_scans=64)
    assert decode_image(buf.getvalue(), budget=budget).shape == (64, 64, 3)
    with pytest.raises(ImageDecodeError, match="500 scans"):
        decode_image(hostile.scan_bomb(500), budget=budget)
    assert decode_image(hostile.scan_bomb(500)).shape == (512, 512, 3)  # without a budget it decodes


def test_the_budget_cannot_be_dodged_and_spares_real_files() -> None:
    """Junk bytes before the scans (which decoders skip) do not hide them; a phone's video appended
    after the JPEG's end is not counted; a flood of empty PNG chunks is refused before decoding;
    a multipart body of thousands of empty parts is refused as soon as it passes the part limit."""
    import struct
    import zlib

    from fetoolkit.imageio import png_chunks
    from fetoolkit.serve.bodies import MAX_PARTS, parse_body
    from fetoolkit.serve.errors import InvalidInput

    bomb = hostile.scan_bomb(500)
    app0_end = 4 + int.from_bytes(bomb[4:6], "big")
    assert jpeg_scans(bomb[:app0_end] + b"\x00\x00\x00" + bomb[app0_end:]) == 500
    photo = load_wild()["obama.jpg"].read_bytes()
    tail = np.random.default_rng(3).integers(0, 256, 5_000_000, np.uint8).tobytes()
    assert tail.count(b"\xff\xda") > 64 and jpeg_scans(photo + tail) == 1

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = hostile.png_bytes(np.zeros((8, 8, 3), np.uint8))
    flood = png[:33] + chunk(b"tEXt", b"") * 100_000 + png[33:]
    assert png_chunks(png, 4096) == 3 and png_chunks(flood, 4096) == 4097
    with pytest.raises(ImageDecodeError, match="chunks"):
        decode_image(flood, budget=SERVICE_BUDGET)
    assert decode_image(png, budget=SERVICE_BUDGET).shape == (8, 8, 3)

    boundary = "b0undary"
    parts = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="aligned"\r\n\r\ntrue\r\n' for _ in range(20_000)
    )
    body = (parts + f"--{boundary}--\r\n").encode()
    with pytest.raises(InvalidInput, match=f"more than {MAX_PARTS}"):  # stopped at the limit
        parse_body("extract", f"multipart/form-data; boundary={boundary}", body, {})


def test_wide_grey_images_decode_without_float64_copies_and_as_before() -> None:
    rng = np.random.default_rng(2)
    for mode, arr in (
        ("I;16", rng.integers(0, 65536, (300, 200), np.uint16)),
        ("I", rng.integers(-5, 70000, (300, 200), np.int32)),
        ("F", rng.random((300, 200)).astype(np.float32) * 300),
    ):
        img = Image.fromarray(arr)
        buf = io.BytesIO()
        img.save(buf, "PNG" if mode == "I;16" else "TIFF")
        got = decode_image(buf.getvalue())
        a = np.asarray(Image.open(io.BytesIO(buf.getvalue())), np.float64)
        hi = 65535.0 if mode == "I;16" or a.max() > 255 else 255.0
        want = np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)  # the previous whole-image formula
        np.testing.assert_array_equal(got[..., 0], want, err_msg=mode)
        assert got.shape == (300, 200, 3)


def test_mtcnn_in_onnxruntime_caps_its_candidates_at_max_faces() -> None:
    """A 400-face mosaic through the service's MTCNN (onnxruntime) with max_faces=8: at most 8 faces,
    the best-scored; on a one-face photo the cap changes nothing."""
    from fetoolkit.detect.base import DetectorCfg
    from fetoolkit.detect.mtcnn_onnx import OnnxMTCNNDetector
    from fetoolkit.imageio import read_image

    capped = OnnxMTCNNDetector(DetectorCfg(max_faces=8))
    faces = capped.detect(hostile.face_mosaic(20))
    assert 1 <= len(faces) <= 8 and [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)
    photo = read_image(load_wild()["obama.jpg"])
    free = OnnxMTCNNDetector(DetectorCfg())
    a, b = capped.detect(photo), free.detect(photo)
    assert len(a) == len(b) >= 1
    np.testing.assert_array_equal(a[0].box, b[0].box)
    np.testing.assert_array_equal(a[0].landmarks, b[0].landmarks)

"""The service under hostile clients, against the real server process (``python -m fetoolkit.serve``).

One server, started as users start it, with ``MAX_CONCURRENT_REQUESTS=4``, ``API_KEYS`` set and short
body/header deadlines (so the test waits seconds, not minutes). Each test plays one attack from the
hardening issue over raw sockets or HTTP and then checks the server still answers a normal request.
The figures of the same attacks under load (latency, RSS over time) come from ``make soak``.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from fetoolkit.data.wild import load_wild
from fetoolkit.serve import hostile
from fetoolkit.serve import process as serve_process
from fetoolkit.serve.process import HOST, ServerProcess

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("key-one-0123456789", "key-two-abcdefghij")
BODY_TIMEOUT_S = 2.0
HEADER_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = serve_process.start_server(
        [
            "model=arcface",
            f"server.body_timeout_s={BODY_TIMEOUT_S}",
            f"server.header_timeout_s={HEADER_TIMEOUT_S}",
        ],
        tmp_path_factory.mktemp("hostile"),
        env={"MAX_CONCURRENT_REQUESTS": "4", "API_KEYS": ",".join(KEYS)},
        timeout=240.0,
        cwd=ROOT,
    )
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60.0, headers={"X-API-Key": KEYS[0]}) as c:
        yield c


@pytest.fixture(scope="module")
def photo() -> bytes:
    return load_wild()["obama.jpg"].read_bytes()


def served(client: httpx.Client, photo: bytes) -> dict:
    """A normal request, answered 200 (the server is alive and not locked out)."""
    r = client.post("/api/extract-embedding", json={"image": base64.b64encode(photo).decode()})
    assert r.status_code == 200, r.text[:300]
    return r.json()


def read_response(s: socket.socket, timeout: float) -> tuple[int, dict, dict]:
    """(status, headers, JSON body) of one HTTP response read from ``s``."""
    s.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        got = s.recv(65536)
        if not got:
            raise ConnectionError(f"closed after {len(data)} bytes: {data[:200]!r}")
        data += got
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        got = s.recv(65536)
        if not got:
            break
        body += got
    return int(lines[0].split()[1]), headers, json.loads(body[:length] or b"null")


def post_head(length: int, key: str = KEYS[0], path: str = "/api/extract-embedding") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\nX-API-Key: {key}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


# ----------------------------------------------------------------------------- admission and deadlines
def test_stalled_uploads_do_not_lock_anyone_out(server: ServerProcess, client: httpx.Client, photo: bytes) -> None:
    """Six sockets send headers and 10 bytes of a 100 kB body, then stall (MAX_CONCURRENT_REQUESTS=4).
    A normal request is served while they are open; each stalled one gets 408 TIMEOUT at its deadline."""
    stalled = []
    for _ in range(6):
        s = socket.create_connection((HOST, server.port))
        s.sendall(post_head(100_000) + b'{"image": ')
        stalled.append(s)
    try:
        t0 = time.monotonic()
        served(client, photo)
        assert time.monotonic() - t0 < BODY_TIMEOUT_S, "the normal request waited for the stalled ones"
        for s in stalled:
            status, headers, body = read_response(s, BODY_TIMEOUT_S + 10)
            assert status == 408 and body["error_type"] == "TIMEOUT", body
            assert headers.get("connection") == "close"
    finally:
        for s in stalled:
            s.close()
    served(client, photo)


def test_silent_and_slow_header_connections_are_closed(server: ServerProcess) -> None:
    """A socket that sends nothing, and one that sends a header byte a second, are answered 408 and
    closed at the header deadline (uvicorn alone kept both open for good)."""
    silent = socket.create_connection((HOST, server.port))
    slow = socket.create_connection((HOST, server.port))
    try:
        slow.sendall(b"GET /api/health HTTP/1.1\r\n")
        t0 = time.monotonic()
        for _ in range(int(HEADER_TIMEOUT_S) + 2):
            try:
                slow.sendall(b"X")
            except OSError:
                break
            time.sleep(1.0)
        for s in (silent, slow):
            status, _, body = read_response(s, HEADER_TIMEOUT_S + 10)
            assert status == 408 and body["error_type"] == "TIMEOUT", body
        assert time.monotonic() - t0 < HEADER_TIMEOUT_S + 10
    finally:
        silent.close()
        slow.close()


def test_oversized_headers_are_refused(server: ServerProcess, client: httpx.Client, photo: bytes) -> None:
    """40 KiB of headers get 431 HEADERS_TOO_LARGE; a 64 MiB header is cut off (431, or the connection
    reset once the server stops reading) long before it is all sent; the server keeps serving."""
    with socket.create_connection((HOST, server.port)) as s:
        s.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Junk: " + b"a" * 40_000 + b"\r\n")
        status, _, body = read_response(s, 10)
        assert status == 431 and body["error_type"] == "HEADERS_TOO_LARGE", body
    sent = 0
    chunk = b"b" * (1 << 20)
    with socket.create_connection((HOST, server.port)) as s:
        s.settimeout(10)
        try:
            s.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Junk: ")
            while sent < 64 << 20:
                s.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
    assert sent < 64 << 20, "the server read a 64 MiB header to its end"
    served(client, photo)


def test_a_pipelined_oversized_header_behind_a_running_request_is_refused(server: ServerProcess) -> None:
    """The head of a second request (40 kB of one header, never finished), sent on the same
    connection while the first is being served, is counted too: the first gets its answer, the second 431."""
    tiny = base64.b64encode(hostile.png_bytes(np.full((8, 8, 3), 90, np.uint8))).decode()
    body = json.dumps({"images": [tiny] * 32, "aligned": True}).encode()
    first = post_head(len(body), path="/api/extract-embedding/batch") + body
    with socket.create_connection((HOST, server.port)) as s:
        s.sendall(first + b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Junk: ")
        time.sleep(0.3)  # the rest arrives in reads of its own, while the first request runs
        s.sendall(b"a" * 40_000)  # past the limit, and all of it read by the server (no reset)
        s.settimeout(30)
        data = b""
        while got := s.recv(65536):  # the server closes the connection after the 431
            data += got
    answers = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        length = int(next(ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")))
        answers.append((int(head.split()[1]), json.loads(rest[:length])))
        data = rest[length:]
    assert [a[0] for a in answers] == [200, 431], answers
    assert answers[0][1]["n_ok"] == 32 and answers[1][1]["error_type"] == "HEADERS_TOO_LARGE"


# ----------------------------------------------------------------------------- decoding and faces
def test_jpeg_scan_bomb_is_refused_before_decoding(client: httpx.Client, photo: bytes) -> None:
    bomb = hostile.scan_bomb(3000)
    assert 3000 <= bomb.count(b"\xff\xda") <= 3001
    r = client.post("/api/extract-embedding", content=bomb, headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 400 and r.json()["error_type"] == "IMAGE_DECODE_ERROR", r.text
    assert "scans" in r.json()["message"]
    served(client, photo)


def test_formats_outside_the_service_budget_are_refused(client: httpx.Client) -> None:
    """An ICO (Pillow decodes its embedded PNG whatever the directory says) is refused by format."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (90, 90, 90)).save(buf, "ICO")
    r = client.post("/api/extract-embedding", content=buf.getvalue(), headers={"Content-Type": "image/x-icon"})
    assert r.status_code == 400 and r.json()["error_type"] == "IMAGE_DECODE_ERROR", r.text
    assert "ICO" in r.json()["message"]


def test_small_files_of_huge_or_wide_images_are_answered(client: httpx.Client, photo: bytes) -> None:
    """A 16-bit PNG and a float TIFF of 4000x4000 and a 1x16,000,000 PNG (tens of KB each, no face):
    decoded within the pixel limit (no float64 copies of the whole image) and answered 422."""
    for name, data in hostile.wide_images().items():
        r = client.post("/api/extract-embedding", content=data, headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 422 and r.json()["error_type"] == "ALIGNMENT_ERROR", (name, r.text[:300])
    served(client, photo)


def test_a_mosaic_of_hundreds_of_faces_is_capped_in_the_detector(client: httpx.Client) -> None:
    """400 real faces in one 640x640 image: the detector stops at server.max_faces (32)."""
    mosaic = hostile.face_mosaic(20)
    buf = io.BytesIO()
    Image.fromarray(mosaic).save(buf, "PNG")
    r = client.post(
        "/api/extract-embedding?all_faces=true", content=buf.getvalue(), headers={"Content-Type": "image/png"}
    )
    assert r.status_code == 200, r.text[:300]
    faces = r.json()["faces"]
    assert 16 <= len(faces) <= 32 and all(f["faces_found"] <= 32 for f in faces)


def test_batches_of_tiny_crops_and_padded_json_are_served(client: httpx.Client) -> None:
    tiny = base64.b64encode(hostile.png_bytes(np.full((1, 1, 3), 128, np.uint8))).decode()
    r = client.post("/api/extract-embedding/batch", json={"images": [tiny] * 32, "aligned": True})
    assert r.status_code == 200 and r.json()["n_ok"] == 32, r.text[:300]
    padded = hostile.padded_json(tiny, 8 << 20)  # an 8 MiB list of {} in a field the schema does not name
    r = client.post("/api/extract-embedding", content=padded, headers={"Content-Type": "application/json"})
    assert r.status_code == 200 and r.json()["embedding"]["detection_ran"] is False, r.text[:300]
    r = client.post("/api/extract-embedding", json={"image": tiny, "aligned": "yes"})
    assert r.status_code == 422 and r.json()["error_type"] == "INVALID_INPUT"


# ----------------------------------------------------------------------------- keys, hosts, leaks
def test_api_keys_are_required_and_checked(server: ServerProcess, photo: bytes) -> None:
    b64 = base64.b64encode(photo).decode()
    with httpx.Client(base_url=server.url, timeout=60.0) as anon:
        for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer " + KEYS[0][:-1]}):
            r = anon.post("/api/extract-embedding", json={"image": b64}, headers=headers)
            assert r.status_code == 401 and r.json()["error_type"] == "UNAUTHORIZED", (headers, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
        assert anon.get("/metrics").status_code == 401
        health = anon.get("/api/health").json()
        assert health["status"] == "healthy" and health["auth_required"] is True
        assert health["model_status"]["weights_sha256"] is None and health["in_flight"] is None
        for headers in ({"X-API-Key": KEYS[1]}, {"Authorization": f"Bearer {KEYS[0]}"}):
            assert anon.post("/api/extract-embedding", json={"image": b64}, headers=headers).status_code == 200
            shown = anon.get("/api/health", headers=headers).json()
            assert shown["model_status"]["weights_sha256"] and shown["in_flight"] is not None
    log = server.log_tail(200_000)
    assert not any(k in log for k in KEYS), "an API key reached the server log"


def test_hosts_request_ids_and_no_redirects(server: ServerProcess, client: httpx.Client) -> None:
    r = client.get("/api/health", headers={"Host": "evil.example"})
    assert r.status_code == 400 and r.json()["error_type"] == "INVALID_INPUT" and "evil.example" in r.json()["message"]
    r = client.get("/api/health/")  # a trailing slash is a 404, not a redirect echoing the Host
    assert r.status_code == 404 and "location" not in r.headers
    mine = client.get("/api/health", headers={"X-Request-ID": "trace-42"})
    assert mine.headers["x-request-id"] == "trace-42"
    other = client.get("/api/health", headers={"X-Request-ID": "bad id\twith spaces"})
    assert len(other.headers["x-request-id"]) == 32 and other.headers["x-request-id"] != "trace-42"


def test_metrics_count_requests_rejections_and_stages(client: httpx.Client, photo: bytes) -> None:
    served(client, photo)
    text = client.get("/metrics").text
    assert 'fetoolkit_requests_total{route="/api/extract-embedding",status="200"}' in text
    assert 'fetoolkit_rejected_total{reason="unauthorized"}' in text
    for stage in ("decode", "detect", "embed"):
        count = next(
            ln for ln in text.splitlines() if ln.startswith(f'fetoolkit_stage_seconds_count{{stage="{stage}"}}')
        )
        assert float(count.split()[-1]) >= 1, count
    assert "fetoolkit_in_flight" in text and "fetoolkit_request_seconds_bucket" in text

"""``python -m fetoolkit.soak [--seconds 150] [--out soak.json]``: the service under steady load
and hostile clients at once, for a bounded time; writes RSS and latency over time (``make soak``).

The server is started as users start it (``python -m fetoolkit.serve model=arcface``,
``MAX_CONCURRENT_REQUESTS=4``, ``API_KEYS`` set). Two client threads send full photos all along (the
"normal" traffic) while the main thread repeats a round of attacks (:mod:`fetoolkit.serve.hostile`):

1. four stalled uploads are opened, then one normal request is timed while they stay open;
2. a 3000-scan progressive JPEG (refusal timed);
3. a 64 MiB header (bytes the server read before cutting it off);
4. a 640x640 mosaic of 400 ORL faces, as a plain request (one face) and with ``all_faces`` (up
   to ``server.max_faces`` embedded), timed; both also once before the load starts;
5. three batches of 32 aligned 1x1 crops, and an aligned crop padded with 8 MiB of JSON;
6. a 16-bit PNG and a float TIFF of 4000x4000 and a 1x16,000,000 PNG (tens of KB each; no face).

The server's RSS is sampled every half second. ``checks`` holds the hardening issue's must-shows
as measured here; the JSON names the machine (CPU, cores, ISA flags, threads).
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from fetoolkit.cpu import machine_info
from fetoolkit.data.wild import load_wild
from fetoolkit.serve import hostile
from fetoolkit.serve import process as serve_process
from fetoolkit.serve.loadgen import percentile_ms, proc_status
from fetoolkit.serve.process import HOST, ServerProcess

log = logging.getLogger("fetoolkit.soak")

KEY = "soak-key-0123456789abcdef"
RSS_LIMIT_MB = 600.0


def _rss_mb(pid: int) -> float:
    return proc_status(pid).get("VmRSS", 0) / 1024.0


def _stalled(port: int, n: int) -> list[socket.socket]:
    """``n`` sockets that sent headers and 10 bytes of a 100 kB body."""
    head = (
        f"POST /api/extract-embedding HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
        f"X-API-Key: {KEY}\r\nContent-Length: 100000\r\n\r\n"
    ).encode()
    out = []
    for _ in range(n):
        s = socket.create_connection((HOST, port))
        s.sendall(head + b'{"image": ')
        out.append(s)
    return out


def _big_header(port: int, total: int = 64 << 20) -> int:
    """Bytes of a ``total``-byte header sent before the server cut the connection."""
    sent = 0
    chunk = b"b" * (1 << 20)
    with socket.create_connection((HOST, port)) as s:
        s.settimeout(10)
        try:
            s.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Junk: ")
            while sent < total:
                s.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
    return sent


def _mosaic(c: httpx.Client, mosaic: bytes, *, all_faces: bool) -> dict[str, Any]:
    """Time one 400-face mosaic request (the default one face, or every face up to max_faces)."""
    t0 = time.monotonic()
    query = "?all_faces=true" if all_faces else ""
    r = c.post(f"/api/extract-embedding{query}", content=mosaic, headers={"Content-Type": "image/png"})
    ms = round((time.monotonic() - t0) * 1e3, 1)
    faces = (len(r.json().get("faces") or []) or 1) if r.status_code == 200 else None
    return {"status": r.status_code, "ms": ms, "faces": faces}


def soak(seconds: float, work: Path) -> dict[str, Any]:
    """Run the soak (see the module docstring) and return the JSON-ready result."""
    server: ServerProcess = serve_process.start_server(
        ["model=arcface"], work / "server", env={"MAX_CONCURRENT_REQUESTS": "4", "API_KEYS": KEY}, timeout=240.0
    )
    photos = [p.read_bytes() for p in load_wild().values()]
    photo_json = [json.dumps({"image": base64.b64encode(b).decode()}).encode() for b in photos]
    tiny = base64.b64encode(hostile.png_bytes(np.full((1, 1, 3), 128, np.uint8))).decode()
    mosaic = hostile.png_bytes(hostile.face_mosaic(20))
    bomb = hostile.scan_bomb(3000)
    padded = hostile.padded_json(tiny, 8 << 20)
    wide = hostile.wide_images()
    headers = {"X-API-Key": KEY}
    t_start = time.monotonic()
    stop = threading.Event()
    rss: list[tuple[float, float]] = []
    normal: list[tuple[float, float, int]] = []

    def sample() -> None:
        while not stop.is_set():
            rss.append((round(time.monotonic() - t_start, 2), round(_rss_mb(server.pid), 1)))
            stop.wait(0.5)

    def traffic(k: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60.0, headers=headers) as c:
            i = k
            while not stop.is_set():
                t0 = time.monotonic()
                r = c.post(
                    "/api/extract-embedding",
                    content=photo_json[i % len(photo_json)],
                    headers={"Content-Type": "application/json"},
                )
                normal.append((round(t0 - t_start, 2), time.monotonic() - t0, r.status_code))
                i += 1

    threads = [threading.Thread(target=sample, daemon=True)] + [
        threading.Thread(target=traffic, args=(k,), daemon=True) for k in range(2)
    ]
    rounds: list[dict[str, Any]] = []
    try:
        rss_start = _rss_mb(server.pid)
        with httpx.Client(base_url=server.url, timeout=60.0, headers=headers) as c:  # before any load
            alone = {
                "mosaic": _mosaic(c, mosaic, all_faces=False),
                "mosaic_all_faces": _mosaic(c, mosaic, all_faces=True),
            }
        for t in threads:
            t.start()
        with httpx.Client(base_url=server.url, timeout=60.0, headers=headers) as c:
            while time.monotonic() - t_start < seconds:
                rd: dict[str, Any] = {"t_s": round(time.monotonic() - t_start, 1)}
                socks = _stalled(server.port, 4)
                t0 = time.monotonic()
                r = c.post(
                    "/api/extract-embedding", content=photo_json[0], headers={"Content-Type": "application/json"}
                )
                rd["with_4_stalled"] = {"status": r.status_code, "ms": round((time.monotonic() - t0) * 1e3, 1)}
                for s in socks:
                    s.close()
                t0 = time.monotonic()
                r = c.post("/api/extract-embedding", content=bomb, headers={"Content-Type": "image/jpeg"})
                rd["scan_bomb"] = {"status": r.status_code, "ms": round((time.monotonic() - t0) * 1e3, 1)}
                rd["header_64mib_bytes_sent"] = _big_header(server.port)
                rd["mosaic"] = _mosaic(c, mosaic, all_faces=False)
                rd["mosaic_all_faces"] = _mosaic(c, mosaic, all_faces=True)
                statuses = [
                    c.post("/api/extract-embedding/batch", json={"images": [tiny] * 32, "aligned": True}).status_code
                    for _ in range(3)
                ]
                statuses.append(
                    c.post(
                        "/api/extract-embedding", content=padded, headers={"Content-Type": "application/json"}
                    ).status_code
                )
                rd["tiny_batches_and_padded_statuses"] = statuses
                rd["wide_image_statuses"] = {
                    k: c.post("/api/extract-embedding", content=v, headers={"Content-Type": "image/png"}).status_code
                    for k, v in wide.items()
                }
                rd["rss_mb"] = round(_rss_mb(server.pid), 1)
                rounds.append(rd)
                log.info("round at %.0f s: %s", rd["t_s"], rd)
        stop.set()
        for t in threads:
            t.join(timeout=70)
        time.sleep(3.0)
        rss_idle = _rss_mb(server.pid)
        alive = httpx.get(f"{server.url}/api/health", timeout=10).status_code == 200
    finally:
        stop.set()
        server.stop()
    lat = [d for _, d, s in normal if s == 200]
    windows = []
    for w0 in range(0, int(seconds) + 1, 15):
        sel = [d for t, d, s in normal if w0 <= t < w0 + 15 and s == 200]
        if sel:
            windows.append(
                {"from_s": w0, "n": len(sel), "p50_ms": percentile_ms(sel, 50), "p95_ms": percentile_ms(sel, 95)}
            )
    rss_max = max(m for _, m in rss) if rss else None
    checks = {
        "normal_request_served_with_4_stalled_uploads": all(r["with_4_stalled"]["status"] == 200 for r in rounds),
        "scan_bomb_3000_refused_under_5s": all(
            r["scan_bomb"]["status"] == 400 and r["scan_bomb"]["ms"] < 5000 for r in rounds
        ),
        "header_64mib_refused": all(r["header_64mib_bytes_sent"] < 64 << 20 for r in rounds),
        "mosaic_400_faces_answered_under_1s": all(
            r["mosaic"]["status"] == 200 and r["mosaic"]["ms"] < 1000 for r in [alone, *rounds]
        ),
        "mosaic_all_faces_answered": all(r["mosaic_all_faces"]["status"] == 200 for r in [alone, *rounds]),
        "wide_images_answered_4xx": all(all(400 <= s < 500 for s in r["wide_image_statuses"].values()) for r in rounds),
        "tiny_batches_and_padded_json_served": all(
            all(s == 200 for s in r["tiny_batches_and_padded_statuses"]) for r in rounds
        ),
        f"rss_under_{RSS_LIMIT_MB:.0f}mb": rss_max is not None and rss_max < RSS_LIMIT_MB,
        "no_5xx_on_normal_traffic": all(s < 500 for _, _, s in normal),
        "healthy_after": alive,
    }
    return {
        "seconds": seconds,
        "server": {"max_concurrent_requests": 4, "api_keys": True, "detector": "yunet (default)"},
        "checks": checks,
        "rss_mb": {"start": round(rss_start, 1), "max": rss_max, "idle_after": round(rss_idle, 1), "timeline": rss},
        "normal_traffic": {
            "requests": len(normal),
            "statuses": {str(s): sum(1 for *_, x in normal if x == s) for s in sorted({s for *_, s in normal})},
            "p50_ms": percentile_ms(lat, 50),
            "p95_ms": percentile_ms(lat, 95),
            "windows": windows,
        },
        "alone": alone,
        "mosaic_all_faces_ms_under_load": {
            "p50": percentile_ms([r["mosaic_all_faces"]["ms"] / 1e3 for r in rounds], 50),
            "max": max((r["mosaic_all_faces"]["ms"] for r in rounds), default=None),
        },
        "rounds": rounds,
        "machine": machine_info(None),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=150.0, help="how long the attacks and the load run")
    parser.add_argument("--out", type=Path, default=Path("soak.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    with tempfile.TemporaryDirectory(prefix="fetoolkit-soak-") as tmp:
        result = soak(args.seconds, Path(tmp))
    args.out.write_text(json.dumps(result, indent=2))
    for name, ok in result["checks"].items():
        log.info("%-48s %s", name, "ok" if ok else "FAILED")
    log.info(
        "RSS max %.0f MB, idle after %.0f MB; normal p50 %s ms; wrote %s",
        result["rss_mb"]["max"] or 0,
        result["rss_mb"]["idle_after"],
        result["normal_traffic"]["p50_ms"],
        args.out,
    )
    return 0 if all(result["checks"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

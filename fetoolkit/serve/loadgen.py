"""The load side of ``python -m fetoolkit.bench_serve``: process accounting from ``/proc``,
request payloads built from the wild photos and ORL crops, and an asyncio HTTP load generator
that keeps ``concurrency`` requests in flight on raw keep-alive sockets and checks the answers.

Used by the service benchmark (``fetoolkit.jobs.bench_serve``); nothing here starts a server.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
import resource
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fetoolkit.serve.process import HOST, ServerProcess

log = logging.getLogger("fetoolkit.bench_serve")

CLK_TCK = os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------- helpers
def proc_status(pid: int) -> dict[str, int]:
    """``VmRSS``, ``VmHWM``, ``RssAnon``, ``RssFile`` of a process in kB (``/proc``; Linux)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                    out[key] = int(line.split()[1])
    except OSError:
        pass
    return out


def _proc_stat(pid: int) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the command name (field 3, the state, is index 0)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (``/proc/PID/stat``)."""
    fields = _proc_stat(pid)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_minor_faults(pid: int) -> int:
    """Minor page faults of a process so far, all its threads (``/proc/PID/stat``)."""
    return int(_proc_stat(pid)[7])


def system_busy_cpu_s() -> float:
    """CPU seconds all processes of the machine have used so far (``/proc/stat``: all but idle and iowait)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / CLK_TCK


def self_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def percentile_ms(lat: list[float], q: float) -> float | None:
    return round(float(np.percentile(np.asarray(lat) * 1000.0, q)), 2) if lat else None


# ----------------------------------------------------------------------------- payloads
@dataclass
class Payloads:
    """Request bodies and the crops behind them."""

    full: list[bytes]
    aligned: list[bytes]
    crops: np.ndarray
    names: list[str]
    full_shapes: list[tuple[int, int]]


def make_payloads(detector: str = "yunet", detect_max_side: int | None = 640) -> Payloads:
    """Full photos and their aligned crops, cut as the service cuts them (the service's default
    detector and ``detect_max_side``, through the project's pipeline)."""
    from PIL import Image

    from fetoolkit.data.wild import load_wild
    from fetoolkit.detect.registry import create_detector
    from fetoolkit.imageio import read_image
    from fetoolkit.pipeline import PipelineCfg, crop_image

    photos = load_wild()
    det = create_detector(detector)
    full, aligned, crops, names, shapes = [], [], [], [], []
    for name in sorted(photos):
        data = photos[name].read_bytes()
        image = read_image(photos[name])
        crop, _, _, _ = crop_image(image, det, PipelineCfg(progress=False, detect_max_side=detect_max_side))
        buf = io.BytesIO()
        Image.fromarray(crop).save(buf, format="PNG")
        full.append(json.dumps({"image": base64.b64encode(data).decode(), "aligned": False}).encode())
        aligned.append(json.dumps({"image": base64.b64encode(buf.getvalue()).decode(), "aligned": True}).encode())
        crops.append(crop)
        names.append(name)
        shapes.append((image.shape[1], image.shape[0]))
    return Payloads(full, aligned, np.stack(crops), names, shapes)


# ----------------------------------------------------------------------------- load generator
def build_request(path: str, body: bytes, port: int) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, keep_alive) of one HTTP/1.1 response with a Content-Length."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length, keep = 0, True
    for line in lines[1:]:
        k, _, v = line.partition(":")
        k = k.strip().lower()
        if k == "content-length":
            length = int(v)
        elif k == "connection" and v.strip().lower() == "close":
            keep = False
    body = await reader.readexactly(length) if length else b""
    return status, body, keep


@dataclass
class LoadResult:
    """One load phase."""

    concurrency: int
    window_s: float
    ok: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    other_cpu_s: float = 0.0
    peak_rss_kb: int = 0
    peak_anon_kb: int = 0

    def summary(self) -> dict[str, Any]:
        rps = self.ok / self.window_s
        return {
            "concurrency": self.concurrency,
            "requests_ok": self.ok,
            "window_s": round(self.window_s, 2),
            "requests_per_s": round(rps, 2),
            "p50_ms": percentile_ms(self.latencies, 50),
            "p95_ms": percentile_ms(self.latencies, 95),
            "p99_ms": percentile_ms(self.latencies, 99),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "server_cpu_s": round(self.server_cpu_s, 2),
            "requests_per_server_cpu_s": round(self.ok / self.server_cpu_s, 2) if self.server_cpu_s > 0 else None,
            "client_cpu_s": round(self.client_cpu_s, 2),
            "other_processes_cpu_s": round(self.other_cpu_s, 2),
            "server_peak_rss_mb_sampled": round(self.peak_rss_kb / 1024, 1),
            "server_peak_anon_rss_mb_sampled": round(self.peak_anon_kb / 1024, 1),
        }


def merge_loads(loads: list[LoadResult]) -> LoadResult:
    """Several load slices of one configuration as one result (sums, and maxima for memory)."""
    out = LoadResult(loads[0].concurrency, sum(x.window_s for x in loads))
    for x in loads:
        out.ok += x.ok
        for k, v in x.statuses.items():
            out.statuses[k] = out.statuses.get(k, 0) + v
        out.latencies.extend(x.latencies)
        out.server_cpu_s += x.server_cpu_s
        out.client_cpu_s += x.client_cpu_s
        out.other_cpu_s += x.other_cpu_s
        out.peak_rss_kb = max(out.peak_rss_kb, x.peak_rss_kb)
        out.peak_anon_kb = max(out.peak_anon_kb, x.peak_anon_kb)
    return out


async def _load(
    port: int, path: str, bodies: list[bytes], concurrency: int, warmup: float, duration: float, pid: int
) -> LoadResult:
    requests = [build_request(path, b, port) for b in bodies]
    loop_start = time.perf_counter()
    window_start = loop_start + warmup
    stop = window_start + duration
    res = LoadResult(concurrency, duration)
    marks: dict[str, float] = {}

    async def sampler() -> None:
        while time.perf_counter() < stop:
            now = time.perf_counter()
            if now >= window_start and "cpu0" not in marks:
                marks["cpu0"], marks["client0"], marks["sys0"] = proc_cpu_s(pid), self_cpu_s(), system_busy_cpu_s()
            st = proc_status(pid)
            res.peak_rss_kb = max(res.peak_rss_kb, st.get("VmRSS", 0))
            res.peak_anon_kb = max(res.peak_anon_kb, st.get("RssAnon", 0))
            await asyncio.sleep(0.05)
        marks["cpu1"], marks["client1"], marks["sys1"] = proc_cpu_s(pid), self_cpu_s(), system_busy_cpu_s()

    async def worker(k: int) -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        i = k
        try:
            while time.perf_counter() < stop:
                req = requests[i % len(requests)]
                i += 1
                t0 = time.perf_counter()
                writer.write(req)
                status, _, keep = await read_response(reader)
                t1 = time.perf_counter()
                if window_start <= t1 <= stop:  # completions inside the window (steady state)
                    res.statuses[status] = res.statuses.get(status, 0) + 1
                    if status == 200:
                        res.ok += 1
                        res.latencies.append(t1 - t0)
                if not keep:
                    writer.close()
                    reader, writer = await asyncio.open_connection(HOST, port)
        finally:
            writer.close()

    await asyncio.gather(sampler(), *(worker(k) for k in range(concurrency)))
    res.server_cpu_s = marks["cpu1"] - marks.get("cpu0", marks["cpu1"])
    res.client_cpu_s = marks["client1"] - marks.get("client0", marks["client1"])
    res.other_cpu_s = max(0.0, marks["sys1"] - marks.get("sys0", marks["sys1"]) - res.server_cpu_s - res.client_cpu_s)
    return res


def run_load(
    server: ServerProcess, path: str, bodies: list[bytes], concurrency: int, warmup: float, duration: float
) -> LoadResult:
    """A closed-loop load phase: ``concurrency`` connections, each sending its next request when
    the previous one is answered, for ``warmup + duration`` s; the answers that arrive inside the
    last ``duration`` s are counted (throughput) and their latencies kept."""
    return asyncio.run(_load(server.port, path, bodies, concurrency, warmup, duration, server.pid))


def check_answers(
    server: ServerProcess,
    p: Payloads,
    embedder: Any,
    *,
    kinds: tuple[str, ...] = ("aligned", "full"),
    bare: bool = False,
) -> dict[str, Any]:
    """The service's (``bare``: the reference app's) embeddings of the payloads against the
    in-process model on the same crops."""
    import httpx

    want = embedder.embed(p.crops)
    out: dict[str, Any] = {}
    with httpx.Client(base_url=server.url, timeout=60.0) as c:
        for kind in kinds:
            cos = []
            for i, body in enumerate(p.aligned if kind == "aligned" else p.full):
                r = c.post("/api/extract-embedding", content=body, headers={"content-type": "application/json"})
                r.raise_for_status()
                e = r.json()["embedding"]
                e = np.asarray(e if bare else e["embedding"], np.float32)
                cos.append(float(e @ want[i]))
            out[kind] = {"min_cosine_to_in_process_model": round(min(cos), 6)}
    return out

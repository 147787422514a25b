"""Detector benchmark: ``python -m fetoolkit.bench_detect --out bench_detect.json`` (part of ``make bench``).

For MTCNN (facenet-pytorch in torch, and its nets in onnxruntime), YuNet and RetinaFace it measures:

* **ms per image**, on 1 and 2 threads, at 92x112 (an ORL photo), 640x480 and 1920x1080 (the
  group photo ``t1.jpg`` scaled and cropped to fill those sizes: real faces), each detector called
  as it is built, on the whole image;
* **full path per photo**, one thread, on the four in-the-wild portraits (0.75-3.3 MP): JPEG
  decode, detection as the service runs it (``detect_scaled`` at ``detect_max_side`` 640), 5-point
  alignment and the ``arcface`` embedding in onnxruntime; MTCNN also at full resolution (the
  eval's default);
* **what they find**: faces on the group photo, failures on ORL's 400 photos, and landmark
  agreement with MTCNN (facenet-pytorch) on ORL and on the portraits: the mean of the five points'
  distances over the inter-ocular distance, mean and 95th percentile over images.

Timing: round robins over the detectors of a cell (one call each per round, after one warm-up
call each) until ``--seconds`` per detector have passed (at least 3, at most ``--max-reps``
rounds); medians. The JSON names the CPU (``machine``); ``checks`` holds the issue's speed target
(YuNet at least 4x faster than MTCNN on the portraits, one thread), as a ratio of the same run.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fetoolkit.cpu import machine_info
from fetoolkit.data.sources import load_orl
from fetoolkit.data.wild import GROUP_FACES, load_group_photo, load_wild
from fetoolkit.detect.align import align
from fetoolkit.detect.landmarks import agreement_summary, landmark_nme
from fetoolkit.detect.registry import create_detector
from fetoolkit.imageio import decode_image, read_image
from fetoolkit.jsonutil import jsonable
from fetoolkit.pipeline import detect_scaled

log = logging.getLogger(__name__)

SIZES = {"640x480": (480, 640), "1920x1080": (1080, 1920)}
SERVICE_MAX_SIDE = 640


def fill(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` scaled to cover ``size`` ``(H, W)`` and centre-cropped to it (no distortion)."""
    import cv2

    h, w = image.shape[:2]
    r = max(size[0] / h, size[1] / w)
    big = cv2.resize(image, (round(w * r), round(h * r)), interpolation=cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR)
    y0, x0 = (big.shape[0] - size[0]) // 2, (big.shape[1] - size[1]) // 2
    return np.ascontiguousarray(big[y0 : y0 + size[0], x0 : x0 + size[1]])


def round_robin(calls: dict[str, Callable[[], object]], seconds: float, max_reps: int) -> dict[str, float]:
    """Median ms of each call, timed in alternation (see the module docstring)."""
    for fn in calls.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in calls}
    rounds = 0
    while rounds < max_reps and (rounds < 3 or min(sum(t) for t in times.values()) < seconds):
        for k, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
        rounds += 1
    return {k: round(1000 * statistics.median(t), 3) for k, t in times.items()}


def detectors(threads: int) -> dict[str, Any]:
    """Every detector, built for ``threads`` intra-op threads."""
    import torch

    torch.set_num_threads(threads)
    return {
        "mtcnn_torch": create_detector("mtcnn", backend="torch"),
        "mtcnn_onnx": create_detector("mtcnn", num_threads=threads),
        "yunet": create_detector("yunet", num_threads=threads),
        "retinaface": create_detector("retinaface", num_threads=threads),
    }


def speed_table(images: dict[str, np.ndarray], threads: Sequence[int], seconds: float, max_reps: int) -> list[dict]:
    rows = []
    for t in threads:
        dets = detectors(t)
        for size, img in images.items():
            ms = round_robin({k: (lambda d=d, img=img: d.detect(img)) for k, d in dets.items()}, seconds, max_reps)
            for k, v in ms.items():
                rows.append({"detector": k, "threads": t, "size": size, "ms": v})
                log.info("%-12s %d thread(s) %-10s %8.2f ms", k, t, size, v)
    return rows


def full_path(portraits: dict[str, bytes], seconds: float, max_reps: int) -> dict[str, Any]:
    """Per portrait and detector (one thread): decode, detect (service settings), align, embed, in ms."""
    from fetoolkit.models.factory import create_embedder

    embedder = create_embedder("arcface", backend="onnx", num_threads=1)
    dets = detectors(1)
    out: dict[str, Any] = {}
    for name, data in portraits.items():
        img = decode_image(data)
        row: dict[str, Any] = {"megapixels": round(img.shape[0] * img.shape[1] / 1e6, 2)}
        lm = max(dets["yunet"].detect(img), key=lambda x: x.score).landmarks
        crop = align(img, lm, (112, 112))
        phases: dict[str, Callable[[], object]] = {"decode": lambda data=data: decode_image(data)}
        for k, d in dets.items():
            phases[f"detect_{k}"] = lambda d=d, img=img: detect_scaled(d, img, SERVICE_MAX_SIDE)
        phases["detect_mtcnn_torch_full_size"] = lambda img=img: dets["mtcnn_torch"].detect(img)
        phases["align"] = lambda img=img, lm=lm: align(img, lm, (112, 112))
        phases["embed"] = lambda crop=crop: embedder.embed(crop[None])
        ms = round_robin(phases, seconds, max_reps)
        row.update(ms)
        for k in dets:
            row[f"total_{k}"] = round(ms["decode"] + ms[f"detect_{k}"] + ms["align"] + ms["embed"], 3)
        out[name] = row
        log.info("%s: %s", name, row)
    return out


def quality(orl: list[np.ndarray], portraits: list[np.ndarray], group: np.ndarray) -> dict[str, Any]:
    """Faces on the group photo, ORL failures, landmark agreement with facenet-pytorch's MTCNN."""
    dets = detectors(1)
    ref = dets.pop("mtcnn_torch")
    out: dict[str, Any] = {"group_photo_faces": {"expected": GROUP_FACES, "mtcnn_torch": len(ref.detect(group))}}
    ref_orl = [ref.detect(i) for i in orl]
    ref_wild = [ref.detect(i) for i in portraits]
    for k, d in dets.items():
        out["group_photo_faces"][k] = len(d.detect(group))
        row: dict[str, Any] = {}
        for set_name, ims, refs in (("orl", orl, ref_orl), ("portraits", portraits, ref_wild)):
            found = [d.detect(i) for i in ims]
            nmes = [
                landmark_nme(max(r, key=lambda x: x.score).landmarks, max(f, key=lambda x: x.score).landmarks)
                for r, f in zip(refs, found)
                if r and f
            ]
            row[set_name] = {
                **agreement_summary(nmes, sum(1 for r, f in zip(refs, found) if not (r and f))),
                "no_face": sum(1 for f in found if not f),
            }
        out[f"landmarks_vs_mtcnn_torch_{k}"] = row
    return out


def checks(out: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's speed target, as ratios of this run."""
    fp = out["full_path"]
    yunet = sum(r["detect_yunet"] for r in fp.values())
    res = []
    for ref in ("mtcnn_onnx", "mtcnn_torch"):
        ratio = sum(r[f"detect_{ref}"] for r in fp.values()) / yunet
        res.append(
            {
                "name": f"YuNet >= 4x faster than {ref} on the portraits, 1 thread (detect_max_side 640)",
                "value": round(ratio, 2),
                "target": 4.0,
                "ok": bool(ratio >= 4.0),
            }
        )
    return res


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="bench_detect.json")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--seconds", type=float, default=1.0, help="timing budget per detector and cell")
    p.add_argument("--max-reps", type=int, default=30)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    orl = load_orl()
    orl_images = [read_image(x) for x in orl.paths]
    group = read_image(load_group_photo())
    wild = load_wild()
    images = {"92x112": orl_images[0], **{k: fill(group, s) for k, s in SIZES.items()}}
    t0 = time.perf_counter()
    out: dict[str, Any] = {
        "machine": machine_info(),
        "speed_ms": speed_table(images, [int(t) for t in args.threads.split(",")], args.seconds, args.max_reps),
        "full_path": full_path({k: v.read_bytes() for k, v in wild.items()}, args.seconds, args.max_reps),
        "quality": quality(orl_images, [read_image(v) for v in wild.values()], group),
    }
    out["checks"] = checks(out)
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    Path(args.out).write_text(json.dumps(jsonable(out), indent=2) + "\n")
    for c in out["checks"]:
        log.info("%s %s: %s (target %s)", "ok  " if c["ok"] else "FAIL", c["name"], c["value"], c["target"])
    log.info("wrote %s", args.out)
    return 0 if all(c["ok"] for c in out["checks"]) else 1


if __name__ == "__main__":
    sys.exit(main())

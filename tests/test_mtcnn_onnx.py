"""OnnxMTCNNDetector (onnxruntime + numpy) against facenet-pytorch's MTCNN (``MTCNNDetector``).

Parity measured here (torch 2.14, onnxruntime 1.32, all 400 ORL faces, the 7 wild photos at
full size and shrunk to the service's 640 px, a 10x10 mosaic of 100 ORL faces): the same
faces everywhere, boxes within 1.9e-4 px, landmarks within 1.3e-4 px, scores within 5e-7.
Everything fed to the nets is bit-identical to facenet-pytorch's; what is left is the
convolutions' float32 summation order. The tests assert 1e-2 px and 1e-5 in score.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from fetoolkit.data.sources import IdentityDataset
from fetoolkit.data.wild import load_wild
from fetoolkit.detect.align import resize_whole
from fetoolkit.detect.mtcnn import MTCNNDetector
from fetoolkit.detect.mtcnn_onnx import (
    MANIFEST,
    NETS,
    OnnxMTCNNDetector,
    crop_bounds,
    crop_resize_area,
    ensure_mtcnn_onnx,
    facenet_weights,
    integral_image,
    nms,
    nms_min,
    pnet_boxes,
    pyramid_scales,
    regress,
    resize_area,
    square,
)
from fetoolkit.imageio import read_image
from fetoolkit.types import Detection

BOX_TOL = 1e-2  # px, boxes and landmarks (measured: < 2e-4)
SCORE_TOL = 1e-5  # measured: < 5e-7
WILD_DIR_FILES = (
    "32bit.png",
    "biden.jpg",
    "obama.jpg",
    "obama2.jpg",
    "obama3.jpg",
    "obama_partial_face.jpg",
    "obama_partial_face2.jpg",
)
SERVICE_MAX_SIDE = 640  # configs/serve.yaml detect_max_side


@pytest.fixture(scope="module", autouse=True)
def torch_one_thread() -> Iterator[None]:
    """The torch reference at 1 thread (as the service runs it): at 2 threads on a busy 2-core
    machine its OpenMP barriers spin and the ORL comparison took minutes instead of seconds."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def onnx_detector() -> OnnxMTCNNDetector:
    return OnnxMTCNNDetector()


@pytest.fixture(scope="module")
def wild_images() -> dict[str, np.ndarray]:
    """Every photo in the wild folder at full size and shrunk to the service's 640 px."""
    folder = next(iter(load_wild().values())).parent
    images = {}
    for name in WILD_DIR_FILES:
        image = read_image(folder / name)
        h, w = image.shape[:2]
        s = SERVICE_MAX_SIDE / max(h, w)
        images[name] = image
        images[f"{name}@{SERVICE_MAX_SIDE}"] = resize_whole(image, (round(h * s), round(w * s)))
    return images


def shrink(image: np.ndarray, max_side: int) -> np.ndarray:
    h, w = image.shape[:2]
    s = max_side / max(h, w)
    return resize_whole(image, (round(h * s), round(w * s)))


def assert_same_detections(ref: list[Detection], got: list[Detection], what: str) -> None:
    """Same number of faces; each reference face has its own match within the tolerances.

    Matched by nearest box rather than by list position, so that two faces whose scores differ
    by less than float noise may come out in either order.
    """
    assert len(got) == len(ref), f"{what}: {len(ref)} faces in torch, {len(got)} in onnx"
    for d in got:
        assert d.box.dtype == np.float32 and d.box.shape == (4,), what
        assert d.landmarks.dtype == np.float32 and d.landmarks.shape == (5, 2), what
        assert isinstance(d.score, float), what
    assert [d.score for d in got] == sorted((d.score for d in got), reverse=True), f"{what}: not sorted by score"
    if not ref:
        return
    boxes = np.stack([d.box for d in got])
    used: set[int] = set()
    for r in ref:
        j = int(np.argmin(np.abs(boxes - r.box).max(axis=1)))
        assert j not in used, f"{what}: two faces matched to one"
        used.add(j)
        g = got[j]
        np.testing.assert_allclose(g.box, r.box, rtol=0, atol=BOX_TOL, err_msg=what)
        np.testing.assert_allclose(g.landmarks, r.landmarks, rtol=0, atol=BOX_TOL, err_msg=what)
        assert abs(g.score - r.score) <= SCORE_TOL, f"{what}: score {g.score} vs {r.score}"


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def test_onnx_files_pass_checker_and_match_torch_nets() -> None:
    """The three graphs check, PNet takes any H, W and batch, and every output equals torch's."""
    import torch
    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

    paths = ensure_mtcnn_onnx()
    assert set(paths) == set(NETS)
    sources = facenet_weights()
    rng = np.random.default_rng(0)
    cases = {
        "pnet": [(1, 3, 12, 12), (2, 3, 37, 50), (1, 3, 101, 64)],
        "rnet": [(1, 3, 24, 24), (5, 3, 24, 24)],
        "onet": [(1, 3, 48, 48), (3, 3, 48, 48)],
    }
    for net, cls in (("pnet", PNet), ("rnet", RNet), ("onet", ONet)):
        onnx.checker.check_model(onnx.load(str(paths[net])), full_check=True)
        module = cls(pretrained=False)
        module.load_state_dict(torch.load(sources[net], map_location="cpu", weights_only=True))
        module.eval()
        session = ort.InferenceSession(str(paths[net]), providers=["CPUExecutionProvider"])
        for shape in cases[net]:
            x = rng.uniform(-1, 1, shape).astype(np.float32)
            got = session.run(None, {"input": x})
            with torch.no_grad():
                want = [t.numpy() for t in module(torch.from_numpy(x))]
            assert len(got) == len(want), net
            for g, w in zip(got, want):
                assert g.shape == w.shape, (net, shape)
                np.testing.assert_allclose(g, w, rtol=0, atol=2e-5, err_msg=f"{net} {shape}")
            prob = got[-1]  # softmax over the 2 classes (axis 1)
            np.testing.assert_allclose(prob.sum(axis=1), 1.0, atol=1e-6)
        if net == "pnet":
            assert got[0].shape == (1, 4, 46, 27) and got[1].shape == (1, 2, 46, 27)


def test_ensure_exports_in_a_child_process(tmp_path: Path) -> None:
    paths = ensure_mtcnn_onnx(tmp_path / "m")
    assert all(p.is_file() and p.parent == tmp_path / "m" for p in paths.values())
    manifest = json.loads((tmp_path / "m" / MANIFEST).read_text())
    assert manifest["files"] == {net: p.name for net, p in paths.items()}
    assert all(f"-v{manifest['export_version']}.onnx" in p.name for p in paths.values())
    stamps = {net: p.stat().st_mtime_ns for net, p in paths.items()}
    assert ensure_mtcnn_onnx(tmp_path / "m") == paths  # cached: no second export
    assert {net: p.stat().st_mtime_ns for net, p in paths.items()} == stamps
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(RuntimeError, match="fetoolkit.jobs.mtcnn_cache"):
        ensure_mtcnn_onnx(blocker)


def test_damaged_export_is_rebuilt_byte_identical(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A scrambled initializer in a cached MTCNN file (size kept) is caught by its sidecar,
    named in a warning, and the file exported again, byte-identical to the clean one."""
    from fetoolkit.hub import sha256_file, sidecar_of

    paths = ensure_mtcnn_onnx(tmp_path / "m")
    clean = {net: sha256_file(p) for net, p in paths.items()}
    assert all(json.loads(sidecar_of(p).read_text())["sha256"] == clean[net] for net, p in paths.items())
    blob = bytearray(paths["onet"].read_bytes())
    blob[len(blob) // 2 : len(blob) // 2 + 64] = bytes(64)  # inside the weights; size kept
    paths["onet"].write_bytes(bytes(blob))
    with caplog.at_level("WARNING"):
        again = ensure_mtcnn_onnx(tmp_path / "m")
    assert str(paths["onet"]) in caplog.text and "rebuilding" in caplog.text
    assert {net: sha256_file(p) for net, p in again.items()} == clean
    sidecar_of(paths["rnet"]).unlink()  # a file without its sidecar is not trusted either
    ensure_mtcnn_onnx(tmp_path / "m")
    assert sidecar_of(paths["rnet"]).is_file() and sha256_file(paths["rnet"]) == clean["rnet"]


# --------------------------------------------------------------------------------------------
# Parity with facenet-pytorch
# --------------------------------------------------------------------------------------------


def test_pipeline_steps_equal_facenet_pytorch_bit_for_bit(wild_images: dict[str, np.ndarray]) -> None:
    """Each numpy step against the facenet-pytorch / torch / torchvision code it reproduces.

    These catch last-bit slips (e.g. ``sum / (kh * kw)`` for torch's ``sum / kh / kw``) that
    stay far below the detection tolerances, and branches the photos may not reach (the "Min"
    overlap, exact score ties).
    """
    import torch
    from facenet_pytorch.models.utils import detect_face as fp
    from torch.nn.functional import interpolate
    from torchvision.ops import batched_nms

    rng = np.random.default_rng(0)
    image = wild_images[f"obama.jpg@{SERVICE_MAX_SIDE}"]
    h, w = image.shape[:2]
    table = integral_image(image)
    timg = torch.as_tensor(image[None].copy()).permute(0, 3, 1, 2).type(torch.float32)  # as detect_face
    for size in [(h, w), (int(h * 0.6 + 1), int(w * 0.6 + 1)), (37, 29), (h + 13, w + 7)]:
        want = interpolate(timg, size=size, mode="area")[0].permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(resize_area(table, *size), want)
    y0, x0 = rng.integers(0, h - 60, 20), rng.integers(0, w - 60, 20)
    y1, x1 = y0 + rng.integers(1, 60, 20), x0 + rng.integers(1, 60, 20)
    for size in (24, 48):
        got = crop_resize_area(table, y0, y1, x0, x1, size)
        for k in range(20):
            crop = timg[0, :, y0[k] : y1[k], x0[k] : x1[k]].unsqueeze(0)
            want = interpolate(crop, size=(size, size), mode="area")[0].permute(1, 2, 0).numpy()
            np.testing.assert_array_equal(got[k], want)

    reg = rng.normal(0, 0.2, (4, 120, 160)).astype(np.float32)
    prob = rng.uniform(0, 1, (120, 160)).astype(np.float32)
    for scale in pyramid_scales(1000, 750, 20, 0.709):
        want, _ = fp.generateBoundingBox(torch.from_numpy(reg[None]), torch.from_numpy(prob[None]), scale, 0.6)
        boxes, scores, cell_reg = pnet_boxes(reg, prob, scale, 0.6)
        np.testing.assert_array_equal(np.concatenate([boxes, scores[:, None], cell_reg], axis=1), want.numpy())

    for n, n_levels in ((300, 7), (2000, None)):  # ties (stable order) / > 1,000 boxes: torchvision's other path
        xy = rng.uniform(0, 200, (n, 2)).astype(np.float32)
        boxes = np.concatenate([xy, xy + rng.uniform(5, 60, (n, 2)).astype(np.float32)], axis=1)
        scores = (rng.integers(0, n_levels, n) / n_levels if n_levels else rng.uniform(0, 1, n)).astype(np.float32)
        tb, ts, ti = torch.from_numpy(boxes), torch.from_numpy(scores), torch.zeros(n, dtype=torch.int64)
        for thr in (0.5, 0.7):
            np.testing.assert_array_equal(nms(boxes, scores, thr), batched_nms(tb, ts, ti, thr).numpy())
        np.testing.assert_array_equal(nms_min(boxes, scores, 0.7), fp.batched_nms_numpy(tb, ts, ti, 0.7, "Min").numpy())
        mv = rng.normal(0, 0.1, (n, 4)).astype(np.float32)
        tb5 = torch.from_numpy(np.concatenate([boxes, scores[:, None]], axis=1))
        np.testing.assert_array_equal(square(boxes), fp.rerec(tb5.clone())[:, :4].numpy())
        np.testing.assert_array_equal(
            regress(boxes, mv, plus_one=True), fp.bbreg(tb5.clone(), torch.from_numpy(mv))[:, :4].numpy()
        )
        shifted = boxes * 5 - 300  # partly outside a 500 x 400 image
        y, ey, x, ex = fp.pad(torch.from_numpy(shifted), 500, 400)
        cy0, cy1, cx0, cx1, valid = crop_bounds(shifted, 500, 400)
        for got_, want_ in ((cy0, y - 1), (cy1, ey), (cx0, x - 1), (cx1, ex), (valid, (ey > y - 1) & (ex > x - 1))):
            np.testing.assert_array_equal(got_, want_)


def test_parity_orl(orl: IdentityDataset, detector: MTCNNDetector, onnx_detector: OnnxMTCNNDetector) -> None:
    """All 400 ORL faces (92x112 grey): one face each, same numbers."""
    n_faces = 0
    for path in orl.paths:
        image = read_image(path)
        ref = detector.detect(image)
        assert_same_detections(ref, onnx_detector.detect(image), str(path))
        n_faces += len(ref)
    assert n_faces >= 390  # the comparison is not vacuous


def test_parity_wild(
    wild_images: dict[str, np.ndarray], detector: MTCNNDetector, onnx_detector: OnnxMTCNNDetector
) -> None:
    """Every wild photo, at full size (up to 2333x1434) and at the service's 640 px."""
    for name, image in wild_images.items():
        ref = detector.detect(image)
        assert ref, name
        assert_same_detections(ref, onnx_detector.detect(image), name)


def test_parity_crowd(orl: IdentityDataset, detector: MTCNNDetector, onnx_detector: OnnxMTCNNDetector) -> None:
    """A 10x10 mosaic of ORL faces: 100 faces, over 1,000 PNet candidates at a scale and in total
    (torchvision's other ``batched_nms`` path), many overlapping boxes in every NMS."""
    faces = [read_image(p) for p in orl.paths[:100]]
    mosaic = np.concatenate([np.concatenate(faces[r * 10 : (r + 1) * 10], axis=1) for r in range(10)], axis=0)
    ref = detector.detect(mosaic)
    assert len(ref) == 100
    assert_same_detections(ref, onnx_detector.detect(mosaic), "mosaic")


def test_no_face(detector: MTCNNDetector, onnx_detector: OnnxMTCNNDetector) -> None:
    rng = np.random.default_rng(0)
    for image in (
        np.full((200, 200, 3), 128, np.uint8),
        rng.integers(0, 256, (200, 200, 3), dtype=np.uint8),
        rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
        np.zeros((20, 20, 3), np.uint8),
    ):
        assert detector.detect(image) == []
        assert onnx_detector.detect(image) == []


def test_bad_images_raise_like_torch(detector: MTCNNDetector, onnx_detector: OnnxMTCNNDetector) -> None:
    bad = [
        np.zeros((11, 50, 3), np.uint8),
        np.zeros((50, 11, 3), np.uint8),
        np.zeros((50, 50, 3), np.float32),
        np.zeros((50, 50), np.uint8),
        np.zeros((50, 50, 4), np.uint8),
        [[0, 0, 0]],
    ]
    for image in bad:
        for d in (detector, onnx_detector):
            with pytest.raises(ValueError, match="image"):
                d.detect(image)  # type: ignore[arg-type]


def test_shorter_side_below_min_face_size_is_no_face(onnx_detector: OnnxMTCNNDetector) -> None:
    """12-19 px: no pyramid scale. facenet-pytorch fails here (``torch.cat`` of an empty list,
    a ValueError in torch 2.14); the onnx detector finds no face."""
    assert pyramid_scales(15, 40, 20, 0.709) == []
    assert onnx_detector.detect(np.full((15, 40, 3), 128, np.uint8)) == []


# --------------------------------------------------------------------------------------------
# Threads and imports
# --------------------------------------------------------------------------------------------


def test_thread_safe(
    orl: IdentityDataset, wild_images: dict[str, np.ndarray], onnx_detector: OnnxMTCNNDetector
) -> None:
    """4 threads detecting different images at once give the sequential results bit for bit."""
    images = [
        wild_images[f"obama.jpg@{SERVICE_MAX_SIDE}"],
        wild_images[f"biden.jpg@{SERVICE_MAX_SIDE}"],
        read_image(orl.paths[0]),
        shrink(wild_images["obama3.jpg"], 400),
    ] * 3
    sequential = [onnx_detector.detect(im) for im in images]
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(onnx_detector.detect, images))
    for want, got in zip(sequential, concurrent):
        assert len(want) == len(got)
        for a, b in zip(want, got):
            assert a.score == b.score
            np.testing.assert_array_equal(a.box, b.box)
            np.testing.assert_array_equal(a.landmarks, b.landmarks)


def test_detect_path_does_not_import_torch(onnx_detector: OnnxMTCNNDetector) -> None:
    """In a fresh interpreter: import, build, detect a face on a real photo; torch never loaded."""
    photo = load_wild()["obama.jpg"]
    code = (
        "import sys\n"
        "from fetoolkit.detect.mtcnn_onnx import OnnxMTCNNDetector\n"
        "from fetoolkit.imageio import read_image\n"
        f"dets = OnnxMTCNNDetector().detect(read_image({str(photo)!r}))\n"
        "assert dets and dets[0].score > 0.99, dets\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'facenet_pytorch'))\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]

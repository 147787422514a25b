"""detect -> align -> embed over a list of images, with progress bars.

The eval job, the gate, the parity job, the service and the notebooks all go through these
functions; none re-implements a stage.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from fetoolkit.backends.common import batches
from fetoolkit.detect.align import align, resize_whole
from fetoolkit.detect.mtcnn import MTCNNDetector, SelectPolicy, select_face
from fetoolkit.imageio import ImageDecodeError, read_image
from fetoolkit.types import Embedder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineCfg:
    """How images become aligned crops.

    Attributes:
        align: detect + 5-point alignment (True) or resize the whole image (False, a baseline).
        select: which face to keep when MTCNN finds several.
        swap_rb: swap red and blue before embedding (a perturbation: feeds BGR to an RGB model).
        batch_size: faces per embedding call.
        progress: show progress bars.
    """

    align: bool = True
    select: SelectPolicy = "most_confident"
    swap_rb: bool = False
    batch_size: int = 32
    progress: bool = True


@dataclass
class Crops:
    """Aligned crops of a list of images.

    Attributes:
        faces: uint8 ``[N, H, W, 3]`` RGB (zeros where ``ok`` is False).
        ok: bool ``[N]``, False for failures to enrol.
        det_scores: float32 ``[N]`` detector confidence of the kept face (NaN: none, or no detection run).
        n_faces: int32 ``[N]`` faces found (-1 when detection did not run).
        landmarks: float32 ``[N, 5, 2]`` landmarks of the kept face (NaN where none).
        failures: ``{index: reason}`` for every image that did not enrol.
    """

    faces: np.ndarray
    ok: np.ndarray
    det_scores: np.ndarray
    n_faces: np.ndarray
    landmarks: np.ndarray
    failures: dict[int, str] = field(default_factory=dict)


def crop_image(image: np.ndarray, detector: MTCNNDetector | None, cfg: PipelineCfg,
               size: tuple[int, int] = (112, 112)) -> tuple[np.ndarray, float, int, np.ndarray]:
    """One RGB image -> (crop uint8 ``[H, W, 3]``, detector score, faces found, landmarks ``[5, 2]``).

    Raises ``LookupError`` when alignment is asked for and no face is found.
    """
    nan_lm = np.full((5, 2), np.nan, np.float32)
    if not cfg.align:
        return resize_whole(image, size), float("nan"), -1, nan_lm
    if detector is None:
        raise ValueError("alignment needs a detector")
    dets = detector.detect(image)
    if not dets:
        raise LookupError("no face found")
    det = select_face(dets, image.shape, cfg.select)
    return align(image, det.landmarks, size), det.score, len(dets), det.landmarks


def crop_images(paths: list[Path], detector: MTCNNDetector | None, cfg: PipelineCfg, *,
                size: tuple[int, int] = (112, 112), aligned: bool = False) -> Crops:
    """Read, detect and align every image; failures are recorded, never dropped silently.

    Args:
        paths: image files.
        detector: MTCNN (unused when ``aligned`` or ``cfg.align`` is False).
        cfg: pipeline settings.
        size: crop size (the model contract's).
        aligned: the images are already aligned crops (resized to ``size`` if they differ).
    """
    n = len(paths)
    out = Crops(np.zeros((n, *size, 3), np.uint8), np.zeros(n, bool), np.full(n, np.nan, np.float32),
                np.full(n, -1, np.int32), np.full((n, 5, 2), np.nan, np.float32))
    step_cfg = PipelineCfg(align=False) if aligned else cfg
    desc = "align" if step_cfg.align else "load"
    for i, path in enumerate(tqdm(paths, desc=desc, unit="img", disable=not cfg.progress, leave=False)):
        try:
            image = read_image(path)
            crop, score, nf, lm = crop_image(image, detector, step_cfg, size)
        except (LookupError, ImageDecodeError, FileNotFoundError, ValueError) as e:
            out.failures[i] = f"{path}: {e}"
            if isinstance(e, LookupError):
                out.n_faces[i] = 0
            continue
        out.faces[i], out.det_scores[i], out.n_faces[i], out.landmarks[i] = crop, score, nf, lm
        out.ok[i] = True
    if out.failures:
        log.warning("%d of %d images did not enrol (first: %s)", len(out.failures), n, next(iter(out.failures.values())))
    return out


def embed_crops(crops: np.ndarray, embedder: Embedder, cfg: PipelineCfg, *, raw: bool = False) -> np.ndarray:
    """Embed uint8 RGB crops ``[N, H, W, 3]`` in batches with a progress bar.

    Returns float32 ``[N, D]``: L2-normalised, or before normalisation when ``raw``.
    """
    if cfg.swap_rb:
        crops = np.ascontiguousarray(crops[..., ::-1])
    fn = embedder.embed_raw if raw else embedder.embed
    out = np.empty((len(crops), embedder.contract.embed_dim), np.float32)
    for s in tqdm(batches(len(crops), cfg.batch_size), desc=f"embed ({embedder.backend})", unit="batch",
                  disable=not cfg.progress, leave=False):
        out[s] = fn(crops[s])
    return out

"""Extraction, engine-independent: which images, and the work one worker does on them.

* :func:`image_list`: the images of a ``dataset=`` config, a plain folder or a file list, with the
  sha256 of each (the store's rows are matched to data sets by it);
* :class:`ExtractSpec`: everything a worker needs to build its models (picklable: sent to the
  processes of ``engine=local`` and the tasks and actors of ``engine=ray``);
* :class:`Cropper` (read + detect + align) and :class:`EmbedWorker` (the model, loaded once) are
  the two stages; :func:`compute_shard` runs both on one shard's images and returns its rows.

Every engine goes through these, so a row is computed the same way whoever computes it.
"""

from __future__ import annotations

import logging
import os
import resource
import socket
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from fetoolkit.detect.registry import AnyDetectorCfg, build_detector
from fetoolkit.pipeline import Crops, PipelineCfg, crop_images, embed_crops
from fetoolkit.store import ImageList, hash_images
from fetoolkit.types import Embedder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractSpec:
    """What a worker builds its detector and model from.

    Attributes:
        model: registry name of the model.
        weights: a local weights file, or None for the record's default.
        backend: ``torch`` or ``onnx``.
        allow_mismatch: see :func:`fetoolkit.models.factory.create_embedder`.
        batch_size: faces per forward pass.
        pipeline: pipeline settings (``progress`` is off inside workers).
        detector: the detector's settings (MTCNN in facenet-pytorch, as the eval's).
        aligned: the images are aligned crops already (no detection).
        flip: embed the mirrored crops too.
        threads: torch / onnxruntime intra-op threads per worker (None: the library default).
    """

    model: str
    weights: str | None
    backend: str
    allow_mismatch: bool
    batch_size: int
    pipeline: PipelineCfg
    detector: AnyDetectorCfg
    aligned: bool
    flip: bool
    threads: int | None


@dataclass(frozen=True)
class ShardItems:
    """The images of one shard (or of one batch of the Ray stages).

    Attributes:
        index: int64 ``[B]`` positions in the store's image list.
        paths: ``B`` paths (or labels of in-memory images).
        sha256: ``B`` image digests (None: unreadable).
        landmarks: float32 ``[B, 5, 2]`` given landmarks, or None.
        images: ``B`` encoded images, or None: read ``paths``.
    """

    index: np.ndarray
    paths: list[str]
    sha256: list[str | None]
    landmarks: np.ndarray | None = None
    images: Sequence[bytes] | None = None


def items_of(images: ImageList, start: int, stop: int) -> ShardItems:
    """The items ``[start, stop)`` of an image list."""
    return ShardItems(
        np.arange(start, stop, dtype=np.int64),
        images.paths[start:stop],
        images.sha256[start:stop],
        None if images.landmarks is None else images.landmarks[start:stop],
        None if images.images is None else images.images[start:stop],
    )


def set_threads(threads: int | None) -> None:
    """torch's intra-op threads for this worker (None: leave the library default)."""
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def worker_name() -> str:
    """``host:pid`` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def peak_rss_mb() -> float:
    """This process's peak resident memory, MB (Linux ``ru_maxrss`` is in KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Cropper:
    """Stage 1: read, detect and align (the detector is built on first use, once per process)."""

    def __init__(self, spec: ExtractSpec, size: tuple[int, int]) -> None:
        self.spec = spec
        self.size = size
        self.cfg = replace(spec.pipeline, progress=False)
        self._detector = None

    def prepare(self, landmarks_given: bool) -> None:
        """Build the detector now if images without ``landmarks_given`` need one: model loading
        belongs to start-up, not to the first shard's time (building MTCNN and using it the first
        time took 1.9 s of the first ORL shard of 50, against 0.7 s of each later one; built at
        start-up, a worker's shards averaged 2.27 s instead of 2.6 s)."""
        if self._detector is None and self.cfg.align and not self.spec.aligned and not landmarks_given:
            self._detector = build_detector(self.spec.detector, num_threads=1, backend="torch")

    def crop(self, items: ShardItems) -> Crops:
        """Aligned crops of ``items`` (failures recorded with their reason, ``f"{path}: {error}"``)."""
        self.prepare(items.landmarks is not None)
        return crop_images(
            [Path(p) for p in items.paths],
            self._detector,
            self.cfg,
            size=self.size,
            aligned=self.spec.aligned,
            images=items.images,
            landmarks=items.landmarks,
        )


class EmbedWorker:
    """Stage 2: the model (built once) -> L2-normalised embeddings and the raw norms."""

    def __init__(self, spec: ExtractSpec, embedder: Embedder | None = None) -> None:
        from fetoolkit.models.factory import create_embedder

        self.spec = spec
        self.cfg = replace(spec.pipeline, progress=False, batch_size=spec.batch_size)
        self.embedder = embedder or create_embedder(
            spec.model,
            weights=spec.weights,
            backend=spec.backend,
            num_threads=spec.threads,
            batch_size=spec.batch_size,
            allow_mismatch=spec.allow_mismatch,
        )

    @property
    def size(self) -> tuple[int, int]:
        """The model's crop size."""
        return self.embedder.contract.size

    def embed(self, faces: np.ndarray, ok: np.ndarray) -> dict[str, np.ndarray]:
        """uint8 ``[B, H, W, 3]`` crops -> ``embedding`` float32 ``[B, D]`` (L2-normalised exactly as
        :meth:`fetoolkit.pipeline.EmbeddedSet.normalized`, NaN rows where not ``ok``) and
        ``raw_norm`` float32 ``[B]`` (and ``embedding_flip`` / ``raw_flip_norm`` with ``flip``)."""
        out = _unit(faces, ok, self.embedder, self.cfg, "")
        if self.spec.flip:
            mirrored = np.ascontiguousarray(faces[:, :, ::-1])
            out |= _unit(mirrored, ok, self.embedder, self.cfg, "_flip")
        return out


def _unit(
    faces: np.ndarray, ok: np.ndarray, embedder: Embedder, cfg: PipelineCfg, suffix: str
) -> dict[str, np.ndarray]:
    d = embedder.contract.embed_dim
    raw = np.full((len(faces), d), np.nan, np.float32)
    if ok.any():
        raw[ok] = embed_crops(faces[ok], embedder, cfg, raw=True)
    norm = np.linalg.norm(raw, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = (raw / np.maximum(norm, 1e-12)).astype(np.float32)
    return {f"embedding{suffix}": unit, f"raw{suffix}_norm": norm[:, 0].astype(np.float32)}


def crop_columns(items: ShardItems, crops: Crops) -> dict[str, Any]:
    """A shard's columns that stage 1 decides (everything but the embeddings)."""
    failure = [_reason(crops.failures.get(i), p) for i, p in enumerate(items.paths)]
    return {
        "index": items.index,
        "path": list(items.paths),
        "image_sha256": list(items.sha256),
        "ok": crops.ok,
        "failure": failure,
        "det_score": crops.det_scores,
        "n_faces": crops.n_faces,
        "landmarks": crops.landmarks,
    }


def _reason(failure: str | None, path: str) -> str | None:
    """A failure's reason without the ``"{path}: "`` prefix :func:`crop_images` writes (the row has its path)."""
    if failure is None:
        return None
    prefix = f"{Path(path)}: "
    return failure[len(prefix) :] if failure.startswith(prefix) else failure


def compute_shard(cropper: Cropper, embedder: EmbedWorker, items: ShardItems) -> dict[str, Any]:
    """Both stages on one shard: its rows as columns (see :func:`fetoolkit.store.rows_table`)."""
    crops = cropper.crop(items)
    return crop_columns(items, crops) | embedder.embed(crops.faces, crops.ok)


def image_list(dataset: Any | None, images: str | None, seed: int = 0) -> tuple[ImageList, bool]:
    """The images to extract and whether they are aligned crops already.

    Args:
        dataset: a ``dataset`` config node (any reader of :func:`fetoolkit.data.load_eval_data`).
        images: a folder (every image under it, recursively) or a text file of image paths (one a
            line, relative ones from the file's folder); wins over ``dataset`` when given.
        seed: the data set's protocol seed (the images do not depend on it).

    Raises:
        FileNotFoundError: no such folder or list file, or a listed file is missing.
        ValueError: no image in it.
    """
    if images:
        src = Path(images).expanduser()
        if src.is_dir():
            from fetoolkit.data.sources import list_images

            paths = list_images(src)
        elif src.is_file():
            lines = [ln.strip() for ln in src.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
            paths = [p if p.is_absolute() else src.parent / p for p in map(Path, lines)]
            missing = [str(p) for p in paths if not p.is_file()]
            if missing:
                raise FileNotFoundError(f"{len(missing)} files of the list {src} do not exist (first: {missing[0]})")
            if not paths:
                raise ValueError(f"the image list {src} names no file")
        else:
            raise FileNotFoundError(f"images= {src}: no such folder or file list")
        names = [str(p.expanduser().resolve()) for p in paths]
        return ImageList(names, hash_images(names), source={"images": str(src.resolve())}), False
    if dataset is None:
        raise ValueError("name the images: dataset=NAME (a data set config) or images=FOLDER_OR_LIST")
    from fetoolkit.data import load_eval_data

    data = load_eval_data(dataset, seed=seed)
    if data.images is not None:
        names = [str(p) for p in data.paths]
    else:
        names = [str(Path(p).expanduser().resolve()) for p in data.paths]
    src_info = {"dataset": data.name, **{k: str(v) for k, v in data.meta.items() if isinstance(v, str | int | float)}}
    return ImageList(names, hash_images(names, data.images), data.landmarks, data.images, src_info), data.aligned

"""What makes an embedding store's rows: the identity written in its manifest and checked on every
resume and every read (the ideas of :func:`fetoolkit.pipeline.crops_key` / ``embeddings_key``).

A store is refused, never mixed, when any of these differ: the model, its weights and runtime file
(sha256), the backend, the input contract, the pipeline settings that change a crop or an embedding,
whether the images are aligned already or aligned from given landmarks, the detector's settings,
the intra-op threads (MTCNN's crops move by a grey level with them) and the versions of the
libraries that compute. ``batch_size``, ``progress``, the engine and the worker count are not part
of it: they do not change a row.
"""

from __future__ import annotations

from typing import Any

from fetoolkit.detect.registry import AnyDetectorCfg
from fetoolkit.pipeline import PipelineCfg, detector_settings
from fetoolkit.types import Embedder
from fetoolkit.versions import library_versions

#: The identity keys a reader (the eval) requires to match; ``threads`` and ``libs`` are reported
#: when they differ (their effect is a few float ulps, see the README), ``flip`` is checked apart.
READ_KEYS = (
    "model",
    "backend",
    "weights_sha256",
    "runtime_sha256",
    "contract",
    "pipeline",
    "aligned_input",
    "given_landmarks",
    "detector",
)


def store_identity(
    embedder: Embedder,
    pipeline: PipelineCfg,
    detector: AnyDetectorCfg,
    *,
    aligned: bool,
    given_landmarks: bool,
    flip: bool,
    threads: int | None,
) -> dict[str, Any]:
    """The identity of the rows ``embedder`` + ``pipeline`` + ``detector`` make (JSON-ready).

    Args:
        embedder: the model.
        pipeline: pipeline settings (``align``, ``select``, ``detect_max_side``, ``swap_rb`` count).
        detector: the detector's settings (left out when no detection runs).
        aligned: the images are aligned crops already.
        given_landmarks: crops are aligned from given landmarks (IJB), no detection.
        flip: rows hold the mirrored crops' embeddings too.
        threads: intra-op threads of each worker (None: the library default, one per core).
    """
    if pipeline.degrade:
        raise ValueError(
            "pipeline.degrade is a perturbation drawn over the whole data set, not per shard: "
            "an embedding store is made without it (pipeline.degrade=0)"
        )
    detects = pipeline.align and not aligned and not given_landmarks
    v = library_versions()
    libs = ["numpy", "pillow", "opencv-python-headless", "torch", "facenet-pytorch"]
    if embedder.backend == "onnx":
        libs.append("onnxruntime")
    return {
        "model": embedder.name,
        "backend": embedder.backend,
        "weights_sha256": getattr(embedder, "weights_sha256", None),
        "runtime_sha256": getattr(embedder, "runtime_sha256", None),
        "contract": embedder.contract.to_dict(),
        "pipeline": {
            "align": pipeline.align,
            "select": pipeline.select,
            "detect_max_side": pipeline.detect_max_side,
            "swap_rb": pipeline.swap_rb,
        },
        "aligned_input": aligned,
        "given_landmarks": given_landmarks,
        "detector": detector_settings(detector) if detects else None,
        "flip": flip,
        "threads": threads,
        "libs": {k: v.get(k) for k in libs},
    }

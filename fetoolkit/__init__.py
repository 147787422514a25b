"""fetoolkit: face-embedding research and evaluation.

The one-call API (:mod:`fetoolkit.onecall`)::

    faces = fetoolkit.embed("photo.jpg")                  # [Face]: box, landmarks, score, embedding, quality
    v = fetoolkit.verify("a.jpg", "b.jpg")                # score, same, threshold and its source
    t = fetoolkit.load_run("outputs/eval/...").threshold(far=1e-3)   # a run's threshold and its interval

The layered API::

    from fetoolkit import create_embedder, detect, align
    dets = detect(image)                       # uint8 [H, W, 3] RGB -> list[Detection]
    crop = align(image, dets[0].landmarks)     # -> uint8 [112, 112, 3]
    emb = create_embedder("arcface").embed(crop[None])   # -> float32 [1, 192], L2-normalised
"""

from fetoolkit.detect import align, detect
from fetoolkit.models.factory import create_embedder
from fetoolkit.models.registry import get_model_spec, list_models
from fetoolkit.onecall import Face, NoFaceError, Verification, embed, load_run, verify
from fetoolkit.types import Detection, Embedder, InputContract

__version__ = "0.1.0"

__all__ = [
    "Detection",
    "Embedder",
    "Face",
    "InputContract",
    "NoFaceError",
    "Verification",
    "__version__",
    "align",
    "create_embedder",
    "detect",
    "embed",
    "get_model_spec",
    "list_models",
    "load_run",
    "verify",
]

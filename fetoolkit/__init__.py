"""fetoolkit: face-embedding research and evaluation.

The layered API::

    from fetoolkit import create_embedder, detect, align
    dets = detect(image)                       # uint8 [H, W, 3] RGB -> list[Detection]
    crop = align(image, dets[0].landmarks)     # -> uint8 [112, 112, 3]
    emb = create_embedder("arcface").embed(crop[None])   # -> float32 [1, 192], L2-normalised
"""

from fetoolkit.detect import align, detect
from fetoolkit.models.factory import create_embedder
from fetoolkit.models.registry import get_model_spec, list_models
from fetoolkit.types import Detection, Embedder, InputContract

__version__ = "0.1.0"

__all__ = [
    "Detection",
    "Embedder",
    "InputContract",
    "__version__",
    "align",
    "create_embedder",
    "detect",
    "get_model_spec",
    "list_models",
]

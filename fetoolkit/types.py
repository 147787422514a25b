"""Shared value types: the input contract, detections and the Embedder protocol.

Everything here is a frozen dataclass or a Protocol so that the stages of the pipeline
(detect -> align -> embed -> score -> metrics) exchange plain, typed values.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

ColorOrder = Literal["RGB", "BGR"]
Layout = Literal["NCHW", "NHWC"]


@dataclass(frozen=True)
class InputContract:
    """How a model wants its aligned face crops.

    The one place where size, colour order, normalisation and layout of a model's input are
    written down. Embedders, the ONNX export (``metadata_props``), the ONNX backend and the
    service all read it; nobody else hard-codes ``/127.5``.

    Attributes:
        size: crop size as ``(height, width)`` in pixels.
        color: channel order the model expects.
        mean: per-channel value subtracted, on the 0-255 scale, in the model's channel order.
        std: per-channel divisor, on the 0-255 scale, in the model's channel order.
        layout: tensor layout the model expects.
        embed_dim: length of the embedding the model returns.
    """

    size: tuple[int, int] = (112, 112)
    color: ColorOrder = "RGB"
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: tuple[float, float, float] = (127.5, 127.5, 127.5)
    layout: Layout = "NCHW"
    embed_dim: int = 512

    def __post_init__(self) -> None:
        if self.color not in ("RGB", "BGR"):
            raise ValueError(f"color must be 'RGB' or 'BGR', got {self.color!r}")
        if self.layout not in ("NCHW", "NHWC"):
            raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {self.layout!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need 3 values, std > 0; got {self.mean}, {self.std}")
        # Normalise lists (from YAML / JSON) into tuples so the dataclass stays hashable.
        object.__setattr__(self, "size", tuple(int(v) for v in self.size))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    def preprocess(self, faces: np.ndarray) -> np.ndarray:
        """Turn aligned crops into the model's input tensor.

        Args:
            faces: uint8 ``[N, H, W, 3]`` RGB crops of ``self.size``.

        Returns:
            float32 ``[N, 3, H, W]`` (NCHW) or ``[N, H, W, 3]`` (NHWC), colour order, mean and
            std applied as the contract says.
        """
        check_faces(faces, self.size)
        x = faces[..., ::-1] if self.color == "BGR" else faces
        x = (x.astype(np.float32) - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        if self.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (lists, not tuples)."""
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputContract:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown input-contract keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


def check_faces(faces: np.ndarray, size: tuple[int, int]) -> None:
    """Raise ``ValueError`` unless ``faces`` is uint8 ``[N, size[0], size[1], 3]``."""
    if not isinstance(faces, np.ndarray):
        raise TypeError(f"faces must be a numpy array, got {type(faces).__name__}")
    if faces.dtype != np.uint8:
        raise ValueError(f"faces must be uint8 RGB, got dtype {faces.dtype}")
    if faces.ndim != 4 or faces.shape[1:] != (size[0], size[1], 3):
        raise ValueError(f"faces must have shape [N, {size[0]}, {size[1]}, 3], got {list(faces.shape)}")


@dataclass(frozen=True)
class Detection:
    """One detected face in image coordinates.

    Attributes:
        box: float32 ``[4]`` as ``x1, y1, x2, y2``.
        score: detector confidence in ``[0, 1]``.
        landmarks: float32 ``[5, 2]`` (x, y): left eye, right eye, nose, mouth left, mouth right.
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray


@runtime_checkable
class Embedder(Protocol):
    """Maps aligned uint8 RGB faces ``[N, H, W, 3]`` to L2-normalised float32 ``[N, D]``."""

    name: str
    backend: str
    contract: InputContract

    def embed(self, faces: np.ndarray) -> np.ndarray: ...

    def embed_raw(self, faces: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class ModelInfo:
    """What a created embedder reports about itself (for results.json and /api/health)."""

    name: str
    backend: str
    contract: InputContract
    weights_sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

"""Run an ``nn.Module`` face model on aligned crops."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from fetoolkit.backends.common import batches, l2_normalize
from fetoolkit.types import InputContract


class TorchEmbedder:
    """Embeds aligned uint8 RGB faces with a PyTorch module (eval mode, no grad).

    Attributes:
        name: registry name of the model.
        backend: ``"torch"``.
        contract: input contract (layout must be NCHW: our modules are NCHW).
        weights_sha256: sha256 of the weights file the module was loaded from.
    """

    backend = "torch"

    def __init__(
        self,
        module: nn.Module,
        contract: InputContract,
        *,
        name: str,
        weights_sha256: str | None = None,
        batch_size: int = 32,
    ) -> None:
        if contract.layout != "NCHW":
            raise ValueError(f"torch modules here take NCHW input; contract says {contract.layout}")
        self.module = module.eval()
        self.contract = contract
        self.name = name
        self.weights_sha256 = weights_sha256
        self.runtime_sha256: str | None = None  # sha256 of the file the tensors came from (create_embedder sets it)
        self.batch_size = batch_size

    @torch.inference_mode()
    def embed_raw(self, faces: np.ndarray) -> np.ndarray:
        """uint8 RGB ``[N, H, W, 3]`` -> float32 ``[N, D]`` before normalisation."""
        x = self.contract.preprocess(faces)
        out = np.empty((len(x), self.contract.embed_dim), dtype=np.float32)
        for s in batches(len(x), self.batch_size):
            out[s] = self.module(torch.from_numpy(x[s])).float().numpy()
        return out

    def embed(self, faces: np.ndarray) -> np.ndarray:
        """uint8 RGB ``[N, H, W, 3]`` -> L2-normalised float32 ``[N, D]``."""
        return l2_normalize(self.embed_raw(faces))

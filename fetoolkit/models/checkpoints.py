"""Weights files into our modules: PyTorch checkpoints, safetensors, ONNX, chosen by suffix.

- ``load_pth_state_dict(path)``: a PyTorch checkpoint (``backbone.pth`` from arcface_torch, or
  a training checkpoint nesting it under ``"state_dict"``/``"model"``, DataParallel
  ``"module."`` prefixes stripped), loaded with ``weights_only=True``.
- ``check_state_dict`` / ``load_weights_file``: strict loading with errors that name keys,
  and dispatch by file suffix (``.onnx`` goes to ``onnx_import.state_dict_from_onnx``).
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from fetoolkit.models.onnx_import import state_dict_from_onnx

logger = logging.getLogger(__name__)

__all__ = ["check_state_dict", "load_pth_state_dict", "load_weights_file"]


def load_pth_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a PyTorch checkpoint into a flat ``{key: tensor}`` state_dict on the CPU.

    Accepts a plain state_dict (arcface_torch's ``backbone.pth``) or a dict nesting it under
    ``"state_dict"`` or ``"model"``; strips a DataParallel/DDP ``"module."`` prefix. Loads
    with ``torch.load(..., map_location="cpu", weights_only=True)``: no pickled code runs.

    Args:
        path: the checkpoint file.

    Returns:
        ``{key: tensor}`` with the tensors' own dtypes (arcface_torch "fp16" checkpoints hold
        float32 master weights; ``load_state_dict`` casts to the module's dtype anyway).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a PyTorch checkpoint, holds a pickled module/object that
            ``weights_only`` refuses, or holds no ``{str: tensor}`` mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        why = next((ln.strip() for ln in str(e).splitlines() if "Unsupported global" in ln), "")
        raise ValueError(
            f"{str(path)!r} is not a plain PyTorch state_dict checkpoint: it pickles more than tensors, which "
            f"fetoolkit never unpickles (weights_only=True){': ' + why if why else ''}. Re-save it where it was "
            "made with torch.save(model.state_dict(), path)"
        ) from None
    except Exception as e:  # torch.load raises RuntimeError/EOFError/IndexError/... on junk
        raise ValueError(f"{str(path)!r} is not a PyTorch checkpoint: {e}") from e

    state = _unnest_state_dict(obj, path)
    return _strip_prefix(state, "module.")


def _unnest_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Find the ``{str: tensor}`` mapping in a loaded checkpoint object."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"{str(path)!r} holds a {type(obj).__name__}, not a state_dict (a dict of tensors)")
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {str(k): v for k, v in obj.items()}
    for key in ("state_dict", "model"):
        inner = obj.get(key)
        if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            logger.info("%s: using the state_dict nested under %r", path, key)
            return {str(k): v for k, v in inner.items()}
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)][:5]
    raise ValueError(
        f"{str(path)!r} is not a state_dict: it has non-tensor entries {bad} and no "
        f"'state_dict'/'model' entry holding tensors"
    )


def _strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Remove ``prefix`` from every key that has it; refuse if that makes two keys equal."""
    if not any(k.startswith(prefix) for k in state):
        return state
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = key[len(prefix) :] if key.startswith(prefix) else key
        if new in out:
            raise ValueError(f"stripping {prefix!r} makes key {new!r} appear twice")
        out[new] = value
    logger.info("stripped the %r prefix from the checkpoint keys", prefix)
    return out


def check_state_dict(module: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Raise ``ValueError`` unless ``state`` has exactly ``module``'s keys and shapes.

    The message lists (up to 10 of each) missing keys, unexpected keys and
    ``key: checkpoint shape vs module shape`` mismatches.
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshapen = [
        f"{k}: checkpoint {list(state[k].shape)} vs module {list(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or misshapen:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:10]}" + (" ..." if len(missing) > 10 else ""))
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:10]}" + (" ..." if len(unexpected) > 10 else ""))
        if misshapen:
            parts.append(f"shape mismatches {misshapen[:10]}" + (" ..." if len(misshapen) > 10 else ""))
        raise ValueError(f"state_dict does not fit {type(module).__name__}: " + "; ".join(parts))


def load_weights_file(module: nn.Module, path: str | Path) -> nn.Module:
    """Load a weights file into ``module`` strictly, choosing the reader by suffix.

    ``.onnx`` -> ``state_dict_from_onnx``; ``.pth``/``.pt``/``.bin``/``.ckpt`` ->
    ``load_pth_state_dict``; ``.safetensors`` -> ``safetensors.torch.load_file``.

    Returns:
        ``module`` itself, weights loaded, put in eval mode.

    Raises:
        ValueError: unknown suffix, unreadable file, or keys/shapes that do not fit.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        state = state_dict_from_onnx(path, module)
    elif suffix in (".pth", ".pt", ".bin", ".ckpt"):
        state = load_pth_state_dict(path)
    elif suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = _strip_prefix(dict(load_file(str(path), device="cpu")), "module.")
        except Exception as e:  # SafetensorError, OSError: truncated or not a safetensors file
            raise ValueError(f"{str(path)!r} is not a readable safetensors file ({type(e).__name__}: {e})") from None
    else:
        raise ValueError(
            f"don't know how to read weights from {str(path)!r}: expected .tflite, .onnx, .pth/.pt/.bin/.ckpt "
            "or .safetensors"
        )
    check_state_dict(module, state)
    module.load_state_dict(state, strict=True)
    return module.eval()

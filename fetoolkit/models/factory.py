"""``create_embedder``: a registry name + optional weights file -> a ready embedder."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fetoolkit.hub import (
    atomic_path,
    cache_home,
    check_recorded,
    fetch_weights,
    record_derived,
    sha256_file,
    verified_derived,
)
from fetoolkit.models.registry import ModelSpec, build_arch, get_model_spec
from fetoolkit.types import Embedder

if TYPE_CHECKING:
    import torch.nn as nn

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx")


def key_hint(spec: ModelSpec) -> str:
    """How to point a model at a local file (for error messages)."""
    return (
        f"Point at a local copy with `model.weights=PATH` (Hydra), MODEL_PATH=PATH (service) or "
        f"create_embedder({spec.name!r}, weights=PATH)."
    )


def resolve_weights(spec: ModelSpec, weights: str | os.PathLike[str] | None) -> tuple[Path, str]:
    """The weights file to use and its sha256: ``weights`` if given, else the record's default.

    A user file is checked against the record's sha256 only when it *is* the record's file
    (same name); other checkpoints of the same architecture are the user's own. A file with a
    sidecar (an ``export`` job's output) must still be the file recorded there
    (``hub.check_recorded``).
    """
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{spec.name}: weights file not found: {path}. {key_hint(spec)}")
        sha = sha256_file(path)
        check_recorded(path, sha)  # one of our exports: still the file that was made?
        return path, sha
    if spec.weights is None:
        releases = "; ".join(f"{k}: {v.source.split(':', 1)[1]}" for k, v in spec.releases.items())
        raise FileNotFoundError(
            f"{spec.name}: no weights ship in any package registry. Supply a checkpoint: "
            f"{key_hint(spec)}" + (f" Known releases: {releases}" if releases else "")
        )
    path = fetch_weights(spec.weights, what=spec.name, key_hint=key_hint(spec))
    return path, spec.weights.sha256 or sha256_file(path)


def load_module(spec: ModelSpec, path: Path, sha256: str) -> nn.Module:
    """Build ``spec.arch`` and load the weights in ``path`` into it (strictly); see ``load_module_verified``."""
    return load_module_verified(spec, path, sha256)[0]


def load_module_verified(spec: ModelSpec, path: Path, sha256: str) -> tuple[nn.Module, str]:
    """Build ``spec.arch`` and load the weights in ``path`` into it (strictly).

    Returns the module and the sha256 of the file its tensors were read from: ``path`` itself,
    or for ``.tflite`` the converted safetensors, which is verified against its sidecar on every
    load and rebuilt from the (sha256-checked) TFLite when it does not match.

    ``.tflite`` files are converted once and cached as safetensors keyed by their sha256;
    ``.onnx`` files go through the one ONNX importer (``onnx_import.state_dict_from_onnx``, for
    every architecture); ``.pth``/``.pt``/``.bin``/``.ckpt`` and ``.safetensors`` are read as
    state_dicts. Keys and shapes are checked strictly (errors name them).
    """
    from safetensors.torch import load_file, save_file

    from fetoolkit.models.checkpoints import check_state_dict, load_weights_file

    if spec.arch is None:
        raise ValueError(onnx_only_message(spec))
    module = build_arch(spec.arch)
    suffix = path.suffix.lower()
    if suffix != ".tflite":
        try:
            return load_weights_file(module, path), sha256
        except ValueError as e:
            raise ValueError(f"{spec.name}: {e}. {key_hint(spec)}") from e
    cached = cache_home() / "converted" / f"{spec.arch}-{sha256[:16]}.safetensors"
    file_sha = verified_derived(cached, sha256)
    if file_sha is not None:
        state = load_file(str(cached))
    else:
        from fetoolkit.models.convert import state_dict_from_tflite

        state = state_dict_from_tflite(path, module)
        with atomic_path(cached) as tmp:
            save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata={"source_sha256": sha256})
        file_sha = record_derived(cached, sha256, "fetoolkit.models.convert: tflite -> safetensors")
    check_state_dict(module, state)
    module.load_state_dict(state, strict=True)
    return module.eval(), file_sha


def onnx_only_message(spec: ModelSpec) -> str:
    """Why an ONNX-only model has no torch backend, and what to run instead."""
    return (
        f"{spec.name} is an ONNX-only model (its weights are an ONNX graph with no PyTorch "
        f"architecture here), so backend=torch does not exist for it: use backend='onnx' "
        f"(python -m fetoolkit.eval model=... backend=onnx; create_embedder({spec.name!r}, backend='onnx'))"
    )


def create_embedder(
    name: str | None = None,
    *,
    weights: str | os.PathLike[str] | None = None,
    backend: str = "torch",
    num_threads: int | None = None,
    batch_size: int = 32,
    export_in_subprocess: bool = False,
    allow_mismatch: bool = False,
) -> Embedder:
    """Build an embedder for a registered model.

    Args:
        name: registry name or alias (``"arcface"``); ``list_models()`` gives them all. May be
            left out for an ``.onnx`` file we exported: its metadata names the model.
        weights: a local weights file (``.pth``, ``.onnx``, ``.tflite``, ``.safetensors``); the
            record's default (fetched and verified) when ``None``.
        backend: ``"torch"`` or ``"onnx"``. With ``"onnx"`` and non-ONNX weights, the torch
            model is exported once (cached by the weights' sha256) and run in onnxruntime.
        num_threads: onnxruntime intra-op threads (torch uses ``torch.set_num_threads``).
        batch_size: faces per forward pass.
        export_in_subprocess: with ``"onnx"``, make a missing export in a child process so that
            this process never imports torch (see ``exported_onnx``).
        allow_mismatch: run an ``.onnx`` file whose metadata names another model or contract
            anyway (see ``OnnxEmbedder``); refused by default.

    Returns:
        An object with ``embed(faces)``: uint8 RGB ``[N, 112, 112, 3]`` -> L2-normalised
        float32 ``[N, D]``, and ``contract``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; use one of {BACKENDS}")
    if name is None:
        name = model_named_by(weights)
    spec = get_model_spec(name)
    path, sha = resolve_weights(spec, weights)
    if backend == "onnx":
        from fetoolkit.backends.onnx_backend import OnnxEmbedder

        if path.suffix.lower() == ".onnx":  # the user's file itself runs
            onnx_path, runtime_sha = path, sha
        else:  # our export of the weights, verified against its sidecar
            onnx_path = exported_onnx(spec, path, sha, in_subprocess=export_in_subprocess)
            runtime_sha = sha256_file(onnx_path)
        emb = OnnxEmbedder(
            onnx_path,
            spec.contract,
            name=spec.name,
            weights_sha256=sha,
            num_threads=num_threads,
            batch_size=batch_size,
            expect_model=spec.name,
            allow_mismatch=allow_mismatch,
        )
        emb.runtime_sha256 = runtime_sha
        return emb
    if spec.arch is None:
        raise ValueError(onnx_only_message(spec))
    if path.suffix.lower() == ".onnx":  # an ONNX file read into our torch module: same name check
        from fetoolkit.backends.onnx_backend import check_names, read_metadata

        check_names(path, read_metadata(path), spec.name, spec.contract, allow_mismatch)
    from fetoolkit.backends.torch_backend import TorchEmbedder

    module, file_sha = load_module_verified(spec, path, sha)
    emb = TorchEmbedder(module, spec.contract, name=spec.name, weights_sha256=sha, batch_size=batch_size)
    emb.runtime_sha256 = file_sha
    return emb


def model_named_by(weights: str | os.PathLike[str] | None) -> str:
    """The registry name an ``.onnx`` file's metadata gives (``fetoolkit.model``, written by our exports).

    Raises:
        ValueError: no weights, not an ``.onnx`` file, or a file without that metadata (name the model).
    """
    if weights is None or Path(weights).suffix.lower() != ".onnx":
        raise ValueError(
            "name the model (create_embedder('arcface', ...); fetoolkit.list_models() lists them): only an .onnx "
            "file exported by fetoolkit names its own model"
        )
    from fetoolkit.backends.onnx_backend import read_metadata
    from fetoolkit.backends.onnx_graph import META_MODEL

    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    named = read_metadata(path).get(META_MODEL)
    if not named:
        raise ValueError(
            f"{path} does not name its model in its metadata ({META_MODEL}); pass the name: "
            "create_embedder('<model>', weights=..., backend='onnx')"
        )
    return named


def _child_error(stderr: str) -> str:
    """The cause a failed child process printed: its ``error: ...`` line (a user error), else the last
    line of its traceback (the exception), else the end of its stderr."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    said = [ln for ln in lines if ln.startswith("error: ")]
    if said:
        return said[-1].removeprefix("error: ")
    if any(ln.startswith("Traceback") for ln in lines):
        return lines[-1]
    return stderr.strip()[-2000:] or "no output"


def exported_onnx(spec: ModelSpec, path: Path, sha256: str, *, in_subprocess: bool = False) -> Path:
    """Our ONNX export of the weights in ``path`` (sha256 ``sha256``), made once and cached.

    The cache key is the weights' sha256 and ``EXPORT_VERSION``. ``in_subprocess``: make a
    missing export in a child process (``python -m fetoolkit.jobs.onnx_cache NAME --weights
    PATH``), so that this process never imports torch (the service: torch alone is ~500 MB).
    """
    from fetoolkit.backends.onnx_backend import EXPORT_VERSION

    onnx_path = cache_home() / "onnx" / f"{spec.name}-{sha256[:16]}-v{EXPORT_VERSION}.onnx"
    if verified_derived(onnx_path, sha256) is not None:
        return onnx_path
    if in_subprocess:
        cmd = [sys.executable, "-m", "fetoolkit.jobs.onnx_cache", spec.name, "--weights", str(path)]
        log.info("exporting %s to ONNX in a child process: %s", spec.name, " ".join(cmd))
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0 or verified_derived(onnx_path, sha256) is None:
            cause = _child_error(done.stderr)
            if done.returncode == 2:  # a user error (the weights): its own message, the fix named
                raise ValueError(cause)
            raise RuntimeError(
                f"{spec.name}: the ONNX export ({' '.join(cmd)}) failed with exit code {done.returncode}: {cause}"
            )
        return onnx_path
    from fetoolkit.backends.export import export_onnx

    export_onnx(load_module(spec, path, sha256), spec.contract, onnx_path, name=spec.name, source_sha256=sha256)
    record_derived(onnx_path, sha256, f"fetoolkit.backends.export v{EXPORT_VERSION}")
    return onnx_path

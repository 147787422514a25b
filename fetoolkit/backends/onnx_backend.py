"""Run an ONNX face model in onnxruntime, its input contract read from the file."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from fetoolkit.backends.common import batches, l2_normalize
from fetoolkit.backends.onnx_graph import (
    META_CALIBRATION,
    META_CONTRACT,
    META_MODEL,
    META_PRECISION,
    META_SOURCE_SHA256,
)
from fetoolkit.cpu import int8_kind, machine_info
from fetoolkit.sharing import user_threads
from fetoolkit.types import InputContract

log = logging.getLogger(__name__)

#: Version of the graphs ``fetoolkit.backends.export`` writes; bumped whenever they change, so that
#: cached exports (``create_embedder(..., backend="onnx")``) are redone. Kept here so that the cache
#: can be looked up without importing torch.
EXPORT_VERSION = 5


#: Why 8-bit weights are not the default, with the figures measured for the warning below
#: (tests/test_export.py, faces that did not calibrate; AVX2 forced with fetoolkit.native).
WEIGHT_BITS_DOC = (
    "onnxruntime's u8s8 kernels on CPUs without VNNI add pairs of uint8 x int8 products in int16 "
    "with saturation (vpmaddubsw), which full-range 8-bit weights overflow; on the arcface int8 "
    "export the cosine to fp32 fell from min 0.9935 / mean 0.996 with VNNI to 0.966 / 0.983 "
    "without, while 7-bit weights give 0.992 / 0.995 on both"
)


def check_int8_fits_cpu(meta: dict[str, str], where: str) -> str | None:
    """A warning when an int8 file quantised with 8-bit weights runs on a CPU without VNNI.

    Args:
        meta: the file's ``metadata_props``.
        where: the file, for the message.

    Returns:
        The warning text (also logged), or None when the file fits this CPU.
    """
    if meta.get(META_PRECISION) != "int8" or int8_kind() != "avx2":
        return None
    try:
        bits = int(json.loads(meta.get(META_CALIBRATION, "{}")).get("weight_bits", 8))
    except (ValueError, TypeError, AttributeError):
        bits = 8  # files from before weight_bits was recorded used the full range
    if bits != 8:
        return None
    msg = (
        f"{where}: int8 file quantised with full-range 8-bit weights (for VNNI CPUs) runs on a CPU without "
        f"VNNI ({machine_info()['cpu']}): expect lower accuracy. {WEIGHT_BITS_DOC}. Re-export it with "
        "`python -m fetoolkit.export ... precision=int8 quantize.weight_bits=7`."
    )
    log.warning(msg)
    return msg


class OnnxModelError(ValueError):
    """The ONNX file is missing, unreadable, or does not fit the contract."""


def check_names(
    path: str | Path,
    meta: dict[str, str],
    expect_model: str | None,
    contract: InputContract | None,
    allow_mismatch: bool = False,
) -> None:
    """Refuse a file whose ``metadata_props`` name another model or input contract than asked for.

    Files without the keys (vendor files) pass: the caller's contract is what they run with.
    With ``allow_mismatch`` the disagreement is logged as a warning instead.

    Raises:
        OnnxModelError: naming both models (or every field of the contract that differs).
    """
    problems = []
    file_model = meta.get(META_MODEL)
    if expect_model is not None and file_model and file_model != expect_model:
        problems.append(f"its metadata names model {file_model!r}, not {expect_model!r}")
    if META_CONTRACT in meta and contract is not None:
        mine, theirs = contract.to_dict(), json.loads(meta[META_CONTRACT])
        diff = [f"{k} {theirs.get(k)!r} (expected {v!r})" for k, v in mine.items() if theirs.get(k) != v]
        if diff:
            problems.append(f"its input contract differs: {', '.join(diff)}")
    if not problems:
        return
    msg = f"{path}: " + "; ".join(problems)
    if not allow_mismatch:
        fix = f"model={file_model}" if file_model else "the model it holds"
        raise OnnxModelError(
            f"{msg}. Pass {fix}, or model.allow_mismatch=true to run it anyway under the file's own contract"
        )
    log.warning("%s; running it anyway (allow_mismatch), with the file's contract", msg)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dict.

    Raises:
        ValueError: the file is not a readable ONNX model.
    """
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends: say which file and what to do
        raise ValueError(
            f"{path} is not a readable ONNX model ({type(e).__name__}); re-export or re-download it"
        ) from None
    return {p.key: p.value for p in model.metadata_props}


def prune_unused_inputs(model: onnx.ModelProto) -> list[str]:
    """Drop graph inputs that no node reads (in place); returns their names.

    The block-quantised SFace file keeps its float weights' names as dangling inputs, which
    onnxruntime would otherwise demand in every feed.
    """
    consumed = {name for node in model.graph.node for name in node.input}
    consumed.update(o.name for o in model.graph.output)
    unused = [i.name for i in model.graph.input if i.name not in consumed]
    if unused:
        kept = [i for i in model.graph.input if i.name in consumed]
        del model.graph.input[:]
        model.graph.input.extend(kept)
    return unused


#: Whether new sessions keep onnxruntime's CPU memory arena (see :func:`use_memory_arena`).
_ARENA = {"enabled": True}


def use_memory_arena(enabled: bool) -> None:
    """Keep (default) or drop onnxruntime's CPU memory arena in every session made from now on.

    The arena keeps each peak allocation for reuse: fast for a fixed batch size, but a service
    answering one 32-crop batch or one 400-face photo holds hundreds of MB from then on. Without
    it, a session's buffers go back to malloc after each run (the service drops it)."""
    _ARENA["enabled"] = bool(enabled)


def session_options(num_threads: int | None = None) -> ort.SessionOptions:
    """Session options: ``num_threads`` intra-op threads, no spinning (MTCNN shares the cores), the
    memory arena as :func:`use_memory_arena` says."""
    so = ort.SessionOptions()
    if not _ARENA["enabled"]:
        so.enable_cpu_mem_arena = False
        so.enable_mem_pattern = False
    if num_threads:
        so.intra_op_num_threads = int(num_threads)
        so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    return so


class OnnxEmbedder:
    """Embeds aligned uint8 RGB faces with onnxruntime.

    The contract comes from the file's ``metadata_props`` (files we export) or, for vendor files
    that have none, from the caller (the model registry). A file whose input does not fit the
    contract is refused when it is opened, not on the first face.
    """

    backend = "onnx"

    def __init__(
        self,
        path: str | Path,
        contract: InputContract | None = None,
        *,
        name: str | None = None,
        weights_sha256: str | None = None,
        num_threads: int | None = None,
        batch_size: int = 32,
        expect_model: str | None = None,
        allow_mismatch: bool = False,
    ) -> None:
        """Open ``path`` in onnxruntime.

        Args:
            path: the ``.onnx`` file.
            contract: the contract the caller expects (the registry's); a file that carries its
                own must agree with it, and a file without one runs with this one.
            name: display name (default: the model the file names, else its stem).
            weights_sha256: the source weights' sha256, for reports.
            num_threads: onnxruntime intra-op threads (None: ``fetoolkit.sharing.user_threads``,
                i.e. ``OMP_NUM_THREADS`` or the CPU affinity when set, else one per core).
            batch_size: faces per ``session.run``.
            expect_model: registry name the caller asked for; a file whose metadata names
                another model is refused.
            allow_mismatch: run a file whose metadata disagrees with ``expect_model`` or
                ``contract`` anyway (the file's contract is used), with a warning.

        Raises:
            OnnxModelError: missing, unreadable or mismatched file.
        """
        path = Path(path)
        if not path.is_file():
            raise OnnxModelError(f"ONNX file not found: {path}")
        try:
            model = onnx.load(str(path))
        except Exception as e:  # onnx raises several types for a bad protobuf
            raise OnnxModelError(f"{path} is not a readable ONNX model: {e}") from None
        meta = {p.key: p.value for p in model.metadata_props}
        weight_names = {t.name for t in model.graph.initializer}
        source: str | bytes = str(path)
        if prune_unused_inputs(model):
            source = model.SerializeToString()
        del model
        check_names(path, meta, expect_model, contract, allow_mismatch)
        if META_CONTRACT in meta:
            contract = InputContract.from_dict(json.loads(meta[META_CONTRACT]))
        if contract is None:
            raise OnnxModelError(
                f"{path} carries no fetoolkit contract in metadata_props; export it with "
                f"`python -m fetoolkit.export` or register it with a declared contract"
            )
        self.path = path
        self.contract = contract
        self.name = name or meta.get(META_MODEL, path.stem)
        self.weights_sha256 = weights_sha256 or meta.get(META_SOURCE_SHA256)
        self.runtime_sha256: str | None = None  # sha256 of the file that runs (create_embedder sets it)
        self.batch_size = batch_size
        # None: OMP_NUM_THREADS or the CPU affinity when the user set one, else onnxruntime's
        # default (one per core); part of cache keys.
        num_threads = num_threads or user_threads()
        self.num_threads = num_threads
        try:
            self.session = ort.InferenceSession(
                source, session_options(num_threads), providers=["CPUExecutionProvider"]
            )
        except Exception as e:
            raise OnnxModelError(f"onnxruntime cannot load {path}: {e}") from None
        self._check_io(weight_names)
        self.int8_warning = check_int8_fits_cpu(meta, str(path))

    def _check_io(self, weights: set[str]) -> None:
        # Old exporters list the initializers as graph inputs too: the data input is the one that is not one.
        inputs = [i for i in self.session.get_inputs() if i.name not in weights]
        outputs = self.session.get_outputs()
        if len(inputs) != 1:
            raise OnnxModelError(f"{self.path}: expected one input, found {[i.name for i in inputs]}")
        inp = inputs[0]
        h, w = self.contract.size
        want = [3, h, w] if self.contract.layout == "NCHW" else [h, w, 3]
        got = list(inp.shape[1:]) if len(inp.shape) == 4 else None
        if got is None or any(isinstance(g, int) and g != x for g, x in zip(got, want)):
            raise OnnxModelError(
                f"{self.path}: input {inp.name!r} has shape {inp.shape}, the contract needs "
                f"[N, {', '.join(map(str, want))}] ({self.contract.layout})"
            )
        out_shape = outputs[0].shape
        if len(out_shape) < 2 or (isinstance(out_shape[-1], int) and out_shape[-1] != self.contract.embed_dim):
            raise OnnxModelError(
                f"{self.path}: output {outputs[0].name!r} has shape {out_shape}, "
                f"expected [N, {self.contract.embed_dim}]"
            )
        self.input_name = inp.name
        self.output_name = outputs[0].name
        self.fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None

    def embed_raw(self, faces: np.ndarray) -> np.ndarray:
        """uint8 RGB ``[N, H, W, 3]`` -> float32 ``[N, D]`` before normalisation."""
        x = self.contract.preprocess(faces)
        n = len(x)
        step = self.fixed_batch or self.batch_size
        out = np.empty((n, self.contract.embed_dim), dtype=np.float32)
        for s in batches(n, step):
            chunk = x[s]
            if self.fixed_batch and len(chunk) < self.fixed_batch:  # pad a fixed-batch model's last chunk
                pad = np.zeros((self.fixed_batch - len(chunk), *chunk.shape[1:]), chunk.dtype)
                chunk = np.concatenate([chunk, pad])
            y = self.session.run([self.output_name], {self.input_name: chunk})[0]
            out[s] = y.reshape(len(chunk), -1)[: s.stop - s.start]
        return out

    def embed(self, faces: np.ndarray) -> np.ndarray:
        """uint8 RGB ``[N, H, W, 3]`` -> L2-normalised float32 ``[N, D]``."""
        return l2_normalize(self.embed_raw(faces))

"""insightface verification files (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``, ...), read safely.

A ``.bin`` is a pickle of ``(bins, issame)``: ``bins`` a list of encoded (JPEG/PNG) aligned
112x112 face images, images ``2k`` and ``2k + 1`` forming pair ``k``; ``issame`` one bool per
pair. The files were written by Python 2 (protocol 2, images as ``str``) or Python 3
(protocol 2 or 4, images as ``bytes`` or as uint8 numpy arrays of the encoded bytes; ``issame``
a list of bools or a numpy bool array).

``pickle.load`` would run any code a file names; :class:`RestrictedUnpickler` instead admits
only bytes, str, lists, tuples, bools, numbers, ``None`` and plain (non-object) numpy arrays and
scalars: the only globals it resolves are numpy's array/scalar reconstructors (under their
numpy 1 and numpy 2 module names, protocol 5's ``_frombuffer`` included), ``numpy.ndarray``,
``numpy.dtype`` (non-object dtypes) and
``_codecs.encode`` with the latin-1 codec (how Python 3 writes ``bytes`` at protocol 2). No
mxnet is needed.

insightface evaluates these files with 10 folds of consecutive pairs (``KFold(10,
shuffle=False)``); :func:`load_bin` does the same.
"""

from __future__ import annotations

import hashlib
import io
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fetoolkit.data.protocols import PairProtocol

log = logging.getLogger(__name__)


class BinFileError(ValueError):
    """Not a usable insightface ``.bin``; the message says why."""


#: The largest array a verification .bin may declare (its arrays are the issame flags: tiny).
MAX_ARRAY_BYTES = 1 << 32


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """``numpy.core.multiarray._reconstruct`` restricted to plain ``numpy.ndarray`` of sane size."""
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"refusing to rebuild an array of type {subtype!r}")
    if not isinstance(dtype, (bytes, str)):
        raise pickle.UnpicklingError("array reconstruct with an unexpected dtype argument")
    dims = (shape,) if isinstance(shape, int) else shape
    if not isinstance(dims, tuple) or not all(isinstance(d, int) and d >= 0 for d in dims):
        raise pickle.UnpicklingError(f"array reconstruct with an unexpected shape {shape!r}")
    nbytes = int(np.prod(dims, dtype=np.float64)) * np.dtype(dtype).itemsize
    if nbytes > MAX_ARRAY_BYTES:
        raise pickle.UnpicklingError(f"refusing an array of {nbytes:.3g} bytes (shape {dims})")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    """``numpy.dtype`` restricted to plain (non-object, non-structured) dtypes."""
    if not isinstance(spec, str) or not isinstance(align, bool) or not isinstance(copy, bool):
        raise pickle.UnpicklingError(f"refusing numpy.dtype({spec!r}, ...)")
    d = np.dtype(spec)
    if d.hasobject or d.fields is not None or d.kind not in "biuf":
        raise pickle.UnpicklingError(f"refusing numpy dtype {spec!r} (only bool/int/float arrays are allowed)")
    return np.dtype(spec, align, copy)


def _scalar(dtype: Any, data: Any = None) -> Any:
    """``numpy.core.multiarray.scalar`` restricted to bool/int/float dtypes and raw bytes."""
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biuf":
        raise pickle.UnpicklingError(f"refusing numpy scalar of dtype {dtype!r}")
    if not isinstance(data, (bytes, bytearray)) or len(data) != dtype.itemsize:
        raise pickle.UnpicklingError("numpy scalar with malformed data")
    return np.frombuffer(bytes(data), dtype=dtype)[0]


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """``numpy._core.numeric._frombuffer`` (protocol 5 arrays) restricted to plain dtypes."""
    if not isinstance(buf, (bytes, bytearray, pickle.PickleBuffer)) or not isinstance(dtype, np.dtype):
        raise pickle.UnpicklingError("refusing numpy _frombuffer with unexpected arguments")
    if dtype.kind not in "biuf" or order not in ("C", "F"):
        raise pickle.UnpicklingError(f"refusing numpy array of dtype {dtype!r}")
    return np.frombuffer(bytes(buf), dtype=dtype).reshape(shape, order=order).copy()


def _latin1_encode(obj: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
    """``_codecs.encode`` restricted to ``(str, 'latin1')``: how py3 pickles bytes at protocol 2."""
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1", "iso-8859-1") or errors != "strict":
        raise pickle.UnpicklingError("refusing _codecs.encode other than (str, 'latin1')")
    return obj.encode("latin1")


_ALLOWED: dict[tuple[str, str], Any] = {
    **{(mod, "_reconstruct"): _reconstruct for mod in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(mod, "scalar"): _scalar for mod in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(mod, "_frombuffer"): _frombuffer for mod in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the few numpy/codecs globals a ``.bin`` needs.

    Any other global (``os.system``, ``builtins.eval``, mxnet classes, ...) raises
    ``pickle.UnpicklingError`` before anything is called.
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: a verification .bin holds only encoded "
                "images (bytes or uint8 arrays) and bools"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed in a .bin")


def safe_loads(data: bytes) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (Python 2 ``str`` -> ``bytes``)."""
    return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()


def _as_bytes(x: Any, k: int) -> bytes:
    if isinstance(x, (bytes, bytearray)):
        return bytes(x)
    if isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 1:
        return x.tobytes()
    raise BinFileError(
        f"image {k} is a {type(x).__name__}"
        f"{'' if not isinstance(x, np.ndarray) else f' of dtype {x.dtype}, shape {x.shape}'}; "
        "expected encoded image bytes or a 1-D uint8 array of them"
    )


def _as_bools(x: Any) -> np.ndarray:
    if isinstance(x, np.ndarray):
        if x.ndim != 1 or x.dtype.kind not in "biu":
            raise BinFileError(f"issame must be 1-D bool, got dtype {x.dtype}, shape {x.shape}")
        arr = x
    elif isinstance(x, (list, tuple)):
        bad = [v for v in x if not isinstance(v, (bool, np.bool_, int, np.integer))]
        if bad:
            raise BinFileError(f"issame holds non-bool values, e.g. {bad[0]!r}")
        arr = np.asarray(x)
    else:
        raise BinFileError(f"issame must be a list or a numpy array of bools, got {type(x).__name__}")
    if arr.size and not np.isin(arr.astype(np.int64), (0, 1)).all():
        raise BinFileError("issame holds values other than 0/1/True/False")
    return arr.astype(bool)


@dataclass(frozen=True)
class BinSet:
    """A verification ``.bin`` with its duplicate images merged.

    Attributes:
        images: the distinct encoded images, ``N`` (first-use order).
        pairs: pairs of indices into ``images``, labels from ``issame``, folds 0..n_folds-1 over
            consecutive pairs.
        n_encoded: images in the file (``2 * P``), before merging duplicates.
    """

    images: list[bytes]
    pairs: PairProtocol
    n_encoded: int


def read_bin(path: str | Path) -> tuple[list[bytes], np.ndarray]:
    """Read ``(bins, issame)`` from a ``.bin`` with the restricted unpickler.

    Returns:
        ``(images, issame)``: encoded images (``2 * P`` of them) and bool ``[P]``.

    Raises:
        FileNotFoundError: missing file.
        BinFileError: not a pickle of ``(list of encoded images, list of issame)``, a refused
            global, or ``len(bins) != 2 * len(issame)``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"verification .bin not found: {path} (set dataset.path=PATH)")
    try:
        obj = safe_loads(path.read_bytes())
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, MemoryError) as e:
        raise BinFileError(f"{path}: not a readable verification .bin: {e or type(e).__name__}") from None
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        raise BinFileError(f"{path}: expected a pickled (bins, issame) pair, got {type(obj).__name__}")
    bins, issame = obj
    if not isinstance(bins, (list, tuple)):
        raise BinFileError(f"{path}: bins must be a list of encoded images, got {type(bins).__name__}")
    images = [_as_bytes(x, k) for k, x in enumerate(bins)]
    same = _as_bools(issame)
    if len(images) != 2 * len(same):
        raise BinFileError(
            f"{path}: {len(images)} images for {len(same)} pairs; a .bin holds two consecutive images per pair"
        )
    if not same.size:
        raise BinFileError(f"{path}: no pairs")
    return images, same


def load_bin(path: str | Path, n_folds: int = 10) -> BinSet:
    """Read a ``.bin``, merge identical images, and build the pair protocol.

    Identical encoded images (the same face used in several pairs) are embedded once.

    Args:
        path: the file.
        n_folds: folds over consecutive pairs (insightface: 10, ``KFold(shuffle=False)``).
    """
    images, same = read_bin(path)
    index: dict[bytes, int] = {}
    uniq: list[bytes] = []
    idx = np.empty(len(images), np.int64)
    for k, blob in enumerate(images):
        h = hashlib.sha256(blob).digest()
        if h not in index:
            index[h] = len(uniq)
            uniq.append(blob)
        idx[k] = index[h]
    n = len(same)
    if n < n_folds:
        raise BinFileError(f"{path}: {n} pairs cannot make {n_folds} folds (set dataset.n_folds)")
    folds = np.empty(n, np.int64)
    for f, part in enumerate(np.array_split(np.arange(n), n_folds)):
        folds[part] = f
    pairs = PairProtocol(idx[0::2].copy(), idx[1::2].copy(), same, folds)
    log.info(
        "%s: %d pairs (%d genuine), %d images of which %d distinct", path, n, int(same.sum()), len(images), len(uniq)
    )
    return BinSet(uniq, pairs, len(images))


def write_bin(path: str | Path, images: list[bytes], issame: list[bool] | np.ndarray, *, protocol: int = 4) -> Path:
    """Write a ``.bin`` (``pickle.dump((images, issame))``, as insightface does); for tests and export."""
    path = Path(path)
    with open(path, "wb") as f:
        pickle.dump((images, issame), f, protocol=protocol)
    return path

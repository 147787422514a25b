"""Requests that hostile or careless clients send, built from real data (tests and ``make soak``).

* :func:`scan_bomb`: a progressive JPEG whose last scan is repeated ``n`` times (a few hundred KB;
  libjpeg decodes every scan, so thousands of them hold a worker for seconds to minutes);
* :func:`face_mosaic`: a grid of real ORL faces (400 faces in 640x640 for ``grid=20``);
* :func:`padded_json`: an aligned-crop request with megabytes of ``{}`` in a field the schema does
  not name;
* :func:`png_bytes`: an array as PNG bytes.
"""

from __future__ import annotations

import io
import json

import cv2
import numpy as np
from PIL import Image


def png_bytes(image: np.ndarray) -> bytes:
    """uint8 ``[H, W, 3]`` (or ``[H, W]``) -> PNG file bytes."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return buf.getvalue()


def scan_bomb(n_scans: int, side: int = 512, seed: int = 0) -> bytes:
    """A progressive JPEG of a ``side`` x ``side`` grey gradient with ``n_scans`` scans: the file
    Pillow writes, its shortest scan (a refinement pass of a few dozen bytes) repeated until there
    are ``n_scans``."""
    del seed  # the image is deterministic
    ramp = np.tile(np.linspace(0, 255, side, dtype=np.float64), (side, 1)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(ramp).save(buf, "JPEG", progressive=True, quality=90)
    data = buf.getvalue()
    end = data.rfind(b"\xff\xd9")
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xDA]
    if not starts or end < starts[-1] or n_scans < len(starts):
        raise ValueError(f"cannot make a {n_scans}-scan JPEG from one of {len(starts)} scans")
    # a scan runs from its SOS marker to the next marker that is not RSTn (here: the next SOS or EOI)
    bounds = [*starts[1:], end]
    a, b = min(zip(starts, bounds), key=lambda ab: ab[1] - ab[0])
    return data[:end] + data[a:b] * (n_scans - len(starts)) + data[end:]


def face_mosaic(grid: int = 20, cell: int = 32) -> np.ndarray:
    """uint8 ``[grid*cell, grid*cell, 3]``: ``grid**2`` ORL faces (cycling through the subjects and
    their images), each resized to ``cell`` x ``cell``."""
    from fetoolkit.data.sources import load_orl
    from fetoolkit.imageio import read_image

    paths = load_orl().paths
    out = np.zeros((grid * cell, grid * cell, 3), np.uint8)
    for k in range(grid * grid):
        face = cv2.resize(read_image(paths[(k * 7) % len(paths)]), (cell, cell), interpolation=cv2.INTER_AREA)
        r, c = divmod(k, grid)
        out[r * cell : (r + 1) * cell, c * cell : (c + 1) * cell] = face
    return out


def padded_json(image_b64: str, pad_bytes: int) -> bytes:
    """``{"image": ..., "aligned": true, "padding": [{}, {}, ...]}`` about ``pad_bytes`` long."""
    n = max(1, pad_bytes // 3)
    pad = b"[" + b"{}," * (n - 1) + b"{}]"
    return b'{"image": ' + json.dumps(image_b64).encode() + b', "aligned": true, "padding": ' + pad + b"}"


def wide_images(side: int = 4000) -> dict[str, bytes]:
    """Small files that decode to large or wide arrays: a 16-bit PNG (a ramp) and a float32 TIFF
    (constant) of ``side`` x ``side``, tens of KB each, and a 1 x 16,000,000 grey PNG."""
    ramp = np.tile(np.linspace(0, 1, side, dtype=np.float32), (side, 1))
    out = {}
    buf = io.BytesIO()
    Image.fromarray((ramp * 65535).astype(np.uint16)).save(buf, "PNG")
    out["png16"] = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray(np.full((side, side), 200.0, np.float32)).save(buf, "TIFF", compression="tiff_adobe_deflate")
    out["tiff_float"] = buf.getvalue()
    buf = io.BytesIO()
    Image.new("L", (16_000_000, 1), 128).save(buf, "PNG")
    out["png_1x16m"] = buf.getvalue()
    return out

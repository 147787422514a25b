"""Decode image files and bytes into uint8 RGB arrays.

Accepts grey, grey+alpha, RGB, RGBA, palette, 16-bit, 32-bit and float and CMYK images; honours
EXIF orientation; refuses decompression bombs and empty or corrupt data with ``ImageDecodeError``.
Plain JPEGs are decoded by OpenCV, with the same pixels as Pillow and in half the time.

:class:`DecodeBudget` bounds what one decode may cost *before* it runs (the service passes one):
the formats accepted, the pixels declared, for JPEG the number of scans (a progressive JPEG of
thousands of tiny scans is a few hundred KB and costs tens of seconds to decode) and for PNG the
number of chunks.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Largest image accepted, in pixels (a 64-megapixel photo). Larger ones are refused.
MAX_PIXELS = 64_000_000
#: Pixels converted at a time from 16-bit, 32-bit and float images (bounds the float64 temporaries).
_CHUNK_PIXELS = 1 << 20


@dataclass(frozen=True)
class DecodeBudget:
    """Limits checked on the file's header and markers, before any pixel is decoded.

    Attributes:
        formats: Pillow format names accepted (``Image.open(...).format``); None: every format.
        max_jpeg_scans: most scans (SOS markers) a JPEG may hold; a baseline JPEG has one, libjpeg's
            progressive default ten.
        max_png_chunks: most chunks a PNG may hold (a photo has a few dozen; a million empty
            ancillary chunks took 4.6 s to decode).
    """

    formats: frozenset[str] | None = None
    max_jpeg_scans: int = 64
    max_png_chunks: int = 4096


#: What the service decodes: the photo and crop formats cameras, phones and browsers write.
SERVICE_BUDGET = DecodeBudget(formats=frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "GIF", "TIFF", "PPM"}))


def jpeg_scans(data: bytes) -> int:
    """Number of scans (SOS markers) of the first image in JPEG bytes; 0 when ``data`` is not a JPEG.

    Walks the marker segments up to the first SOS (their lengths skip APPn/EXIF payloads, which may
    hold thumbnails), then counts SOS markers up to the first EOI: inside entropy-coded data a 0xFF
    byte is always followed by 0x00 or a restart marker, so ``FF DA`` / ``FF D9`` there are real
    markers, and what follows the EOI (a phone's appended video, an MPO's second image) is not
    counted. When the walk meets bytes that are not a marker (decoders skip such junk), every
    ``FF DA`` up to the first EOI after one is counted instead, so junk cannot hide scans.
    """
    if not data.startswith(b"\xff\xd8"):
        return 0
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            break  # junk where a marker must be: count conservatively below
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xDA:
            break
        if 0xD0 <= marker <= 0xD9 or marker == 0x01:  # markers without a length
            i += 2
            continue
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    first = data.find(b"\xff\xda", i)
    if first < 0:
        return 0
    eoi = data.find(b"\xff\xd9", first)
    return data.count(b"\xff\xda", first, n if eoi < 0 else eoi)


def png_chunks(data: bytes, limit: int) -> int:
    """Chunks of PNG bytes, counted by walking their lengths and stopping past ``limit`` (so a flood
    of a million empty chunks costs microseconds to detect); 0 when ``data`` is not a PNG."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return 0
    i, count, n = 8, 0, len(data)
    while i + 8 <= n and count <= limit:
        count += 1
        if data[i + 4 : i + 8] == b"IEND":
            break
        i += 12 + int.from_bytes(data[i : i + 4], "big")
    return count


def check_budget(data: bytes, img: Image.Image, budget: DecodeBudget) -> None:
    """Raise ``ImageDecodeError`` when the opened (not yet decoded) image would exceed ``budget``."""
    if budget.formats is not None and img.format not in budget.formats:
        raise ImageDecodeError(f"{img.format or 'this'} images are not accepted; send one of {sorted(budget.formats)}")
    if img.format in ("JPEG", "MPO"):
        scans = jpeg_scans(data)
        if scans > budget.max_jpeg_scans:
            raise ImageDecodeError(
                f"the JPEG holds {scans} scans; at most {budget.max_jpeg_scans} are decoded (re-save it as a "
                "baseline or standard progressive JPEG)"
            )
    if img.format == "PNG" and png_chunks(data, budget.max_png_chunks) > budget.max_png_chunks:
        raise ImageDecodeError(f"the PNG holds more than {budget.max_png_chunks} chunks; re-save it")


class ImageDecodeError(ValueError):
    """The bytes are not an image we can use; the message says why."""


def decode_image(data: bytes, *, max_pixels: int = MAX_PIXELS, budget: DecodeBudget | None = None) -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, PGM, ...).

    Args:
        data: the encoded file.
        max_pixels: refuse images with more pixels than this (decompression-bomb guard).
        budget: formats and JPEG scans accepted (checked before decoding); None: no such limits.

    Returns:
        uint8 ``[H, W, 3]`` RGB.

    Raises:
        ImageDecodeError: empty, corrupt, non-image, zero-sized or too large.
    """
    if not data:
        raise ImageDecodeError("empty image data")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                raise ImageDecodeError(f"image is {w}x{h} = {w * h} pixels; the limit is {max_pixels}")
            if budget is not None:
                check_budget(data, img, budget)
            fast = _decode_jpeg_fast(data, img)
            if fast is not None:
                return fast
            img.load()
            if img.width * img.height > max_pixels:  # a container (ICO, ...) may declare less than it holds
                raise ImageDecodeError(f"image decodes to {img.width}x{img.height} pixels; the limit is {max_pixels}")
    except ImageDecodeError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageDecodeError(f"not a decodable image: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageDecodeError(f"corrupt image data: {e}") from None
    return to_rgb(img)


def _decode_jpeg_fast(data: bytes, img: Image.Image) -> np.ndarray | None:
    """OpenCV's decode of a plain JPEG (RGB or grey, no EXIF rotation, ending in its EOI marker),
    or None for Pillow to decode.

    OpenCV's libjpeg-turbo gives the same pixels as Pillow's, bit for bit (``tests/test_imageio.py``
    checks baseline, progressive, every chroma subsampling, restart markers, grey), in about half
    the time here (a 3.3 MP photo: 30 ms instead of 68), and a full photo's decode is most of the
    service's time. A file cut short has no EOI at its end and goes to Pillow, which refuses it.
    """
    if img.format != "JPEG" or img.mode not in ("RGB", "L") or not data.endswith(b"\xff\xd9"):
        return None
    if img.getexif().get(0x0112, 1) != 1:
        return None
    try:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error:  # whatever OpenCV cannot decode, Pillow decodes or refuses with its own message
        return None
    if bgr is None or bgr.shape[:2] != (img.height, img.width):
        return None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def to_rgb(img: Image.Image) -> np.ndarray:
    """A PIL image (any mode) -> uint8 ``[H, W, 3]`` RGB, EXIF orientation applied."""
    if img.getexif().get(0x0112, 1) != 1:  # EXIF orientation; transposing copies the image
        img = ImageOps.exif_transpose(img)
    if img.width == 0 or img.height == 0:
        raise ImageDecodeError("image has zero width or height")
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return np.repeat(_wide_grey_to_uint8(img)[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite on white so transparent backgrounds don't turn into black ones.
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, rgba)
    return np.array(img if img.mode == "RGB" else img.convert("RGB"), dtype=np.uint8)  # one copy, writable


def _wide_grey_to_uint8(img: Image.Image) -> np.ndarray:
    """A 16-bit, 32-bit or float grey image -> uint8 ``[H, W]``: ``round(v / hi * 255)`` clipped to
    0..255, ``hi`` = 65535 for 16-bit images (and wider ones using more than 8 bits), else 255.

    Converted in float64 a block of rows at a time, so a 16 MP image costs its native array and
    the uint8 result, not several full-size float64 copies (which took +430 MB for a 37 KB PNG)."""
    arr = np.asarray(img)
    rows = max(1, _CHUNK_PIXELS // max(arr.shape[1], 1))
    blocks = range(0, arr.shape[0], rows)

    def block(r: int) -> np.ndarray:
        b = arr[r : r + rows].astype(np.float64)
        return np.nan_to_num(b, nan=0.0, posinf=0.0, neginf=0.0) if arr.dtype.kind == "f" else b

    wide = img.mode.startswith("I;16") or any(float(block(r).max(initial=0)) > 255 for r in blocks)
    hi = 65535.0 if wide else 255.0
    out = np.empty(arr.shape, np.uint8)
    for r in blocks:
        out[r : r + rows] = np.clip(block(r) / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out


def read_image(path: str | os.PathLike[str], *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file into uint8 ``[H, W, 3]`` RGB (see ``decode_image``)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image not found: {p}")
    try:
        return decode_image(p.read_bytes(), max_pixels=max_pixels)
    except ImageDecodeError as e:
        raise ImageDecodeError(f"{p}: {e}") from None

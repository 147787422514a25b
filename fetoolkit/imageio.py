"""Decode image files and bytes into uint8 RGB arrays.

Accepts grey, grey+alpha, RGB, RGBA, palette, 16-bit and CMYK images; honours EXIF
orientation; refuses decompression bombs and empty or corrupt data with ``ImageDecodeError``.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Largest image accepted, in pixels (a 64-megapixel photo). Larger ones are refused.
MAX_PIXELS = 64_000_000


class ImageDecodeError(ValueError):
    """The bytes are not an image we can use; the message says why."""


def decode_image(data: bytes, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, PGM, ...).

    Args:
        data: the encoded file.
        max_pixels: refuse images with more pixels than this (decompression-bomb guard).

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
            img.load()
    except ImageDecodeError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageDecodeError(f"not a decodable image: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageDecodeError(f"corrupt image data: {e}") from None
    return to_rgb(img)


def to_rgb(img: Image.Image) -> np.ndarray:
    """A PIL image (any mode) -> uint8 ``[H, W, 3]`` RGB, EXIF orientation applied."""
    if img.getexif().get(0x0112, 1) != 1:  # EXIF orientation; transposing copies the image
        img = ImageOps.exif_transpose(img)
    if img.width == 0 or img.height == 0:
        raise ImageDecodeError("image has zero width or height")
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        grey = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite on white so transparent backgrounds don't turn into black ones.
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, rgba)
    return np.array(img if img.mode == "RGB" else img.convert("RGB"), dtype=np.uint8)  # one copy, writable


def read_image(path: str | os.PathLike[str], *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file into uint8 ``[H, W, 3]`` RGB (see ``decode_image``)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image not found: {p}")
    try:
        return decode_image(p.read_bytes(), max_pixels=max_pixels)
    except ImageDecodeError as e:
        raise ImageDecodeError(f"{p}: {e}") from None

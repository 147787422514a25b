"""Image decoding: modes, EXIF orientation, and refusals with a reason."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from fetoolkit.imageio import ImageDecodeError, decode_image, read_image


def encode(img: Image.Image, fmt: str = "PNG", **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_grey_rgba_and_16bit_become_rgb() -> None:
    grey = Image.fromarray(np.full((10, 20), 100, np.uint8), "L")
    out = decode_image(encode(grey))
    assert out.shape == (10, 20, 3) and out.dtype == np.uint8 and (out == 100).all()

    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0  # one transparent pixel -> white background
    out = decode_image(encode(Image.fromarray(rgba, "RGBA")))
    assert tuple(out[1, 1]) == (200, 0, 0) and tuple(out[0, 0]) == (255, 255, 255)

    sixteen = Image.fromarray(np.full((4, 4), 65535, np.uint16))
    out = decode_image(encode(sixteen))
    assert (out == 255).all()


def test_exif_orientation_is_applied() -> None:
    arr = np.zeros((10, 30, 3), np.uint8)  # wide image
    arr[:, :5] = 255  # white band on the left
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    out = decode_image(encode(img, "JPEG", exif=exif.tobytes(), quality=95))
    assert out.shape == (30, 10, 3), "EXIF orientation 6 turns a 30x10 image into 10x30"
    assert out[:5].mean() > 200, "the left band ends up on top"


@pytest.mark.parametrize(
    "data,match",
    [
        (b"", "empty"),
        (b"definitely not an image", "not a decodable image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "corrupt|not a decodable"),
    ],
)
def test_bad_bytes_refused(data: bytes, match: str) -> None:
    with pytest.raises(ImageDecodeError, match=match):
        decode_image(data)


def test_truncated_jpeg_refused() -> None:
    data = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)), "JPEG")
    with pytest.raises(ImageDecodeError):
        decode_image(data[: len(data) // 3])


def test_decompression_bomb_refused() -> None:
    big = Image.new("L", (5000, 5000))
    data = encode(big)  # compresses to a few KB
    assert len(data) < 100_000
    with pytest.raises(ImageDecodeError, match="limit"):
        decode_image(data, max_pixels=10_000_000)


def test_missing_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        read_image(tmp_path / "nope.jpg")


def _jpeg_variants() -> dict[str, bytes]:
    """A real photo re-saved every way a camera or a library writes a plain JPEG."""
    from fetoolkit.data.wild import load_wild

    photo = Image.open(load_wild()["obama.jpg"]).convert("RGB").crop((0, 0, 901, 1011))  # odd sizes
    out = {}
    for sub in (0, 1, 2):  # 4:4:4, 4:2:2, 4:2:0
        for progressive in (False, True):
            b = io.BytesIO()
            photo.save(b, "JPEG", quality=90, subsampling=sub, progressive=progressive)
            out[f"subsampling {sub}, progressive {progressive}"] = b.getvalue()
    for name, kwargs, img in (
        ("grey", {}, photo.convert("L")),
        ("restart markers", {"restart_marker_blocks": 4}, photo),
    ):
        b = io.BytesIO()
        img.save(b, "JPEG", quality=90, **kwargs)
        out[name] = b.getvalue()
    for name, path in load_wild().items():
        out[name] = path.read_bytes()
    return out


@pytest.mark.parametrize("name", sorted(_jpeg_variants()))
def test_fast_jpeg_decode_gives_pillows_pixels(name: str) -> None:
    """Plain JPEGs are decoded by OpenCV (about twice as fast here); the pixels are Pillow's own."""
    from fetoolkit.imageio import _decode_jpeg_fast

    data = _jpeg_variants()[name]
    img = Image.open(io.BytesIO(data))
    assert _decode_jpeg_fast(data, img) is not None  # the fast path is the one taken
    assert np.array_equal(decode_image(data), np.asarray(img.convert("RGB")))


def test_jpegs_the_fast_path_leaves_to_pillow() -> None:
    """Rotated (EXIF), CMYK and cut-short JPEGs are Pillow's: it rotates, converts and refuses them."""
    from fetoolkit.imageio import _decode_jpeg_fast

    photo = Image.new("RGB", (40, 30), (200, 10, 10))
    rotated = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    photo.save(rotated, "JPEG", exif=exif)
    cmyk = io.BytesIO()
    photo.convert("CMYK").save(cmyk, "JPEG")
    plain = io.BytesIO()
    photo.save(plain, "JPEG")
    for data in (rotated.getvalue(), cmyk.getvalue(), plain.getvalue()[:-10]):
        assert _decode_jpeg_fast(data, Image.open(io.BytesIO(data))) is None
    assert decode_image(rotated.getvalue()).shape == (40, 30, 3)  # rotated by Pillow
    with pytest.raises(ImageDecodeError):
        decode_image(plain.getvalue()[:-10])

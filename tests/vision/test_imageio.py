import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from vision.imageio import ImageTooLarge, NotAnImage, TruncatedImage, decode_image


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **kw)
    return out.getvalue()


def png_bomb(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK", "P", "LA", "RGBA", "I;16"])
def test_any_mode_decodes_to_rgb(mode):
    # given an image in an unusual mode
    fmt = "TIFF" if mode in ("CMYK", "I;16") else "PNG"
    img = Image.new(mode, (30, 20))
    # when decoded
    out, info = decode_image(_encode(img, fmt))
    # then it is RGB with the same size
    assert out.mode == "RGB" and out.size == (30, 20)
    assert (info.width, info.height) == (30, 20)


def test_alpha_is_composited_on_white():
    img = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    out, _ = decode_image(_encode(img, "PNG"))
    assert out.getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_keeps_its_range():
    arr = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 256).astype(np.uint16)
    img = Image.fromarray(arr)
    out, _ = decode_image(_encode(img, "PNG"))
    values = np.asarray(out)[..., 0]
    assert values.min() == 0 and values.max() >= 250  # scaled, not clipped to white


def test_exif_orientation_is_applied():
    # given a 40x20 JPEG whose EXIF says "rotate 90°"
    img = Image.new("RGB", (40, 20), (10, 200, 10))
    exif = Image.Exif()
    exif[0x0112] = 6
    out, info = decode_image(_encode(img, "JPEG", exif=exif))
    assert out.size == (20, 40)
    assert (info.width, info.height) == (20, 40)


def test_downscale_long_side():
    img = Image.new("RGB", (3000, 1500), (1, 2, 3))
    out, info = decode_image(_encode(img, "JPEG"), max_side=1024)
    assert max(out.size) == 1024 and out.size[1] == 512
    assert (info.width, info.height) == (3000, 1500)


@pytest.mark.parametrize("data", [b"", b"hello, not an image", b"%PDF-1.4 ...", b"GIF89a" + b"\x00" * 3])
def test_non_images_are_refused(data):
    with pytest.raises(NotAnImage):
        decode_image(data)


def test_truncated_jpeg_is_refused():
    rng = np.random.default_rng(0)
    data = _encode(Image.fromarray(rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)), "JPEG")
    with pytest.raises(TruncatedImage):
        decode_image(data[: len(data) // 2])


def test_decompression_bomb_is_refused_before_decoding():
    with pytest.raises(ImageTooLarge, match="pixels"):
        decode_image(png_bomb(30000, 30000))


def test_too_many_bytes_is_refused():
    with pytest.raises(ImageTooLarge):
        decode_image(b"\xff" * 1000, max_bytes=100)


def test_strip_jpeg_metadata_removes_exif_and_keeps_pixels():
    from vision.imageio import strip_jpeg_metadata

    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 60, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif[0x8825] = {1: "N", 2: (59.0, 19.0, 0.0)}
    data = _encode(img, "JPEG", exif=exif, quality=90)
    stripped = strip_jpeg_metadata(data)
    assert stripped is not None and len(stripped) < len(data)
    again = Image.open(io.BytesIO(stripped))
    assert not again.getexif()
    assert np.array_equal(np.asarray(again), np.asarray(Image.open(io.BytesIO(data))))
    assert strip_jpeg_metadata(b"\x89PNG....") is None
    assert strip_jpeg_metadata(data[:10]) is None

"""Decoding untrusted image bytes safely.

Every image that enters the platform (catalog import, partner uploads, shopper searches)
goes through :func:`decode_image`, so the rules live in one place: it must really be an
image, not truncated, not a decompression bomb, EXIF orientation applied, any mode
converted to RGB, and optionally downscaled so that its long side is at most ``max_side``.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# 50 megapixels: a 12 MP phone photo passes with room to spare; a 30000x30000 PNG bomb
# (900 MP) is refused before its pixels are decoded.
DEFAULT_MAX_PIXELS = 50_000_000
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO"})


class ImageError(ValueError):
    """Base class: the bytes cannot be used as an image. ``str(err)`` is shown to users."""


class NotAnImage(ImageError):
    pass


class TruncatedImage(ImageError):
    pass


class ImageTooLarge(ImageError):
    """Too many bytes or too many pixels (a decompression bomb is one of these)."""


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int  # after EXIF orientation, before any downscale
    height: int


def _read(source: bytes | str | os.PathLike | BinaryIO, max_bytes: int) -> bytes:
    if isinstance(source, bytes):
        data = source
    elif isinstance(source, (str, os.PathLike)):
        size = Path(source).stat().st_size
        if size > max_bytes:
            raise ImageTooLarge(f"the file is {size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB")
        data = Path(source).read_bytes()
    else:
        data = source.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ImageTooLarge(f"the file is larger than the {max_bytes / 1e6:.0f} MB limit")
    if not data:
        raise NotAnImage("the file is empty")
    return data


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode (CMYK, P, LA, I;16, RGBA, ...) to RGB; alpha is composited on white."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits rather than clipping everything to white.
        import numpy as np

        arr = np.asarray(img, dtype=np.float64)
        peak = arr.max() or 1.0
        scale = 255.0 / (65535.0 if peak > 255 else 255.0)
        return Image.fromarray((arr * scale).clip(0, 255).astype("uint8"), "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def decode_image(
    source: bytes | str | os.PathLike | BinaryIO,
    *,
    max_side: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> tuple[Image.Image, ImageInfo]:
    """Decode, validate and normalise an image. Raises an :class:`ImageError` subclass."""
    data = _read(source, max_bytes)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            probe = Image.open(io.BytesIO(data))
            fmt = probe.format or "?"
            width, height = probe.size
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
            raise ImageTooLarge("the image has too many pixels (decompression bomb?)") from exc
        raise NotAnImage("the file is not an image we can read (JPEG, PNG, WebP, GIF, BMP, TIFF)") from exc
    except Exception as exc:  # PIL raises many types on hostile headers
        if "truncated" in str(exc).lower():
            raise TruncatedImage("the image file is truncated or damaged") from exc
        raise NotAnImage(f"the file is not a valid image ({exc.__class__.__name__})") from exc
    if fmt not in ALLOWED_FORMATS:
        raise NotAnImage(f"image format {fmt} is not accepted")
    if width < 1 or height < 1:
        raise NotAnImage("the image has no pixels")
    if width * height > max_pixels:
        raise ImageTooLarge(f"the image is {width}x{height} pixels; the limit is {max_pixels / 1e6:.0f} megapixels")
    try:
        img = Image.open(io.BytesIO(data))
        if max_side and fmt == "JPEG":
            img.draft("RGB", (max_side, max_side))  # decode at 1/2, 1/4, 1/8 scale: much faster
        # LOAD_TRUNCATED_IMAGES is global in PIL; make sure nobody turned it on.
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        img.load()
    except (OSError, SyntaxError, ValueError) as exc:
        if "truncated" in str(exc).lower() or "broken data stream" in str(exc).lower():
            raise TruncatedImage("the image file is truncated or damaged") from exc
        raise NotAnImage(f"the image could not be decoded: {exc}") from exc
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not reject an otherwise fine photo
        pass
    img = to_rgb(img)
    # Size after orientation, but in the original's pixel scale (draft() may have shrunk it).
    scale_back = max(width, height) / max(img.size)
    info = ImageInfo(format=fmt, width=round(img.width * scale_back), height=round(img.height * scale_back))
    if max_side and max(img.size) > max_side:
        img = downscale(img, max_side)
    return img, info


def downscale(img: Image.Image, max_side: int) -> Image.Image:
    w, h = img.size
    if max(w, h) <= max_side:
        return img
    s = max_side / max(w, h)
    return img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BILINEAR, reducing_gap=2.0)


_JPEG_METADATA_MARKERS = frozenset(range(0xE1, 0xF0)) | {0xFE}  # APP1..APP15 (EXIF, XMP, ...), COM


def strip_jpeg_metadata(data: bytes) -> bytes | None:
    """The same JPEG without EXIF/XMP/comments (GPS included), without re-encoding.

    Returns None when ``data`` is not a JPEG this can walk (the caller re-encodes then).
    APP0 (JFIF) and APP14 (Adobe colour transform) are kept: they change how the pixels
    decode. Only the header segments before the scan are touched.
    """
    if not data.startswith(b"\xff\xd8"):
        return None
    out, i, n = bytearray(b"\xff\xd8"), 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xDA:  # start of scan: the rest is image data
            return bytes(out + data[i:])
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if length < 2 or i + 2 + length > n:
            return None
        if marker not in _JPEG_METADATA_MARKERS or marker == 0xEE:
            out += data[i : i + 2 + length]
        i += 2 + length
    return None

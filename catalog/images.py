"""The one gate every stored image passes: validate, orient, fingerprint."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import BinaryIO

import imagehash
from django.conf import settings
from django.core.files.base import ContentFile
from PIL import Image, ImageOps

from vision.imageio import ImageError, decode_image

_EXTENSIONS = {
    "JPEG": ".jpg",
    "MPO": ".jpg",
    "PNG": ".png",
    "WEBP": ".webp",
    "GIF": ".gif",
    "BMP": ".bmp",
    "TIFF": ".tif",
}
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class PreparedImage:
    content: ContentFile
    width: int
    height: int
    sha256: str
    phash: str
    mirror_phash: str  # of the left-right mirror image: finds mirrored copies (not stored)


def _needs_rotation(data: bytes) -> bool:
    with Image.open(io.BytesIO(data)) as img:
        return img.getexif().get(_EXIF_ORIENTATION, 1) not in (1, None)


def image_prepare(*, source: bytes | BinaryIO, name: str = "image") -> PreparedImage:
    """Validate untrusted image bytes and return what to store.

    The original bytes are kept (no recompression) unless the EXIF orientation must be
    applied, in which case the upright pixels are re-encoded. Raises vision's ImageError
    with a message fit for the user.
    """
    data = source if isinstance(source, bytes) else source.read()
    img, info = decode_image(data, max_pixels=settings.IMAGE_MAX_PIXELS, max_bytes=settings.IMAGE_MAX_BYTES)
    ext = _EXTENSIONS[info.format]
    if _needs_rotation(data):
        out = io.BytesIO()
        img.save(out, format="JPEG", quality=92)
        data, ext = out.getvalue(), ".jpg"
    stem = (name.rsplit("/", 1)[-1].rsplit(".", 1)[0] or "image")[:50]
    return PreparedImage(
        content=ContentFile(data, name=f"{stem}{ext}"),
        width=img.width,
        height=img.height,
        sha256=hashlib.sha256(data).hexdigest(),
        phash=str(imagehash.phash(img)),
        mirror_phash=str(imagehash.phash(ImageOps.mirror(img))),
    )


__all__ = ["ImageError", "PreparedImage", "image_prepare"]

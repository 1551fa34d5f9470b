"""Near-copy detection: is this image a (transformed) copy of one we already hold?

Two kinds of evidence, both cheap to compare:

* the 64-bit perceptual hash (imagehash.phash: DCT of a 32x32 grey thumbnail) of the
  image *and of its mirror image*: a resized, recompressed, lightly watermarked or
  colour-shifted copy keeps its hash within a few bits; a mirrored copy matches through
  the mirrored hash. A crop moves the DCT grid, so crops defeat it.
* the embedding (L2-normalised, cosine) of the image and of its mirror: a crop, a
  watermark or a colour shift barely moves it, but different photos of one product also
  land near each other, so its threshold is set high (benchmarks/stolen_images.py).

The decision is an OR of the two; thresholds come from :class:`CopyPolicy`. This module is
framework-free: the apps turn rows into arrays. It also holds the transformations the
evaluation (and the tests) apply to make copies.
"""

from __future__ import annotations

from dataclasses import dataclass

import imagehash
import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

HASH_BITS = 64


def phash_hex(img: Image.Image) -> str:
    return str(imagehash.phash(img))


def mirror_phash_hex(img: Image.Image) -> str:
    """The hash of the left-right mirror image: compared with stored hashes, it finds mirrored copies."""
    return str(imagehash.phash(ImageOps.mirror(img)))


def hashes_to_uint64(hexes) -> np.ndarray:
    return np.fromiter((int(h, 16) if h else 0 for h in hexes), dtype=np.uint64)


def hamming(a: np.ndarray | int, b: np.ndarray) -> np.ndarray:
    """Bit distance between one or many 64-bit hashes and ``b`` (broadcasting)."""
    return np.bitwise_count(np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))).astype(
        np.int16
    )


@dataclass(frozen=True)
class CopyPolicy:
    """A copy when the hash (or mirrored hash) is within ``max_hash_distance`` bits, or the
    embedding (or mirrored embedding) cosine reaches ``min_similarity``."""

    max_hash_distance: int
    min_similarity: float

    def is_copy(self, *, hash_distance: int | None, similarity: float | None) -> bool:
        return (hash_distance is not None and hash_distance <= self.max_hash_distance) or (
            similarity is not None and similarity >= self.min_similarity
        )


@dataclass(frozen=True)
class Evidence:
    """The closest stored image by each measure (positions into the candidate arrays)."""

    hash_distance: int | None = None
    hash_index: int | None = None
    hash_mirrored: bool = False
    similarity: float | None = None
    similarity_index: int | None = None
    similarity_mirrored: bool = False


def closest(
    *,
    phash: int | None,
    mirror_phash: int | None,
    vectors: np.ndarray | None,
    candidate_hashes: np.ndarray,
    candidate_vectors: np.ndarray | None,
    policy: CopyPolicy | None = None,
) -> Evidence:
    """Compare one image with candidates.

    ``vectors`` is [1 or 2, d]: the image's embedding and optionally its mirror's;
    ``candidate_vectors`` is [n, d] aligned with ``candidate_hashes`` [n] (uint64). With a
    policy, a candidate that passes both thresholds is preferred (the best-supported match:
    several studio shots of one brand's variants are near-identical, and the closest hash
    alone can point at a sibling product).
    """
    n = len(candidate_hashes)
    if not n:
        return Evidence()
    d = dm = sims = None
    if phash is not None:
        d = hamming(phash, candidate_hashes)
        dm = hamming(mirror_phash, candidate_hashes) if mirror_phash is not None else d
    if vectors is not None and candidate_vectors is not None and len(candidate_vectors):
        assert vectors.ndim == 2 and candidate_vectors.shape == (n, vectors.shape[1]), (
            vectors.shape,
            candidate_vectors.shape,
        )
        sims = vectors @ candidate_vectors.T  # [1 or 2, n]
    hash_pick = sim_pick = None
    if policy is not None and d is not None and sims is not None:
        both = (np.minimum(d, dm) <= policy.max_hash_distance) & (sims.max(axis=0) >= policy.min_similarity)
        if both.any():
            i = int(np.flatnonzero(both)[sims.max(axis=0)[both].argmax()])
            hash_pick = sim_pick = i
    fields: dict = {}
    if d is not None:
        best = np.minimum(d, dm)
        i = int(best.argmin()) if hash_pick is None else hash_pick
        fields.update(hash_distance=int(best[i]), hash_index=i, hash_mirrored=bool(dm[i] < d[i]))
    if sims is not None:
        i = int(sims.max(axis=0).argmax()) if sim_pick is None else sim_pick
        k = int(sims[:, i].argmax())
        fields.update(similarity=float(sims[k, i]), similarity_index=i, similarity_mirrored=bool(k == 1))
    return Evidence(**fields)


def matches(
    *,
    phash: int,
    mirror_phash: int,
    vectors: np.ndarray | None,
    candidate_hashes: np.ndarray,
    candidate_vectors: np.ndarray | None,
    policy: CopyPolicy,
) -> np.ndarray:
    """Boolean mask over the candidates: which are near-copies of this image (either way round)."""
    d = np.minimum(hamming(phash, candidate_hashes), hamming(mirror_phash, candidate_hashes))
    hit = d <= policy.max_hash_distance
    if vectors is not None and candidate_vectors is not None and len(candidate_vectors):
        hit |= (vectors @ candidate_vectors.T).max(axis=0) >= policy.min_similarity
    return hit


# --------------------------------------------------------------------------- copies, for evaluation


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.truetype("DejaVuSans-Bold.ttf", size)
    except OSError:
        return ImageFont.load_default()


def t_resize(img: Image.Image, scale: float = 0.5) -> Image.Image:
    w, h = img.size
    return img.resize((max(8, round(w * scale)), max(8, round(h * scale))), Image.LANCZOS)


def t_jpeg(img: Image.Image, quality: int = 25) -> Image.Image:
    import io

    out = io.BytesIO()
    img.convert("RGB").save(out, format="JPEG", quality=quality)
    out.seek(0)
    return Image.open(out).convert("RGB")


def t_crop(img: Image.Image, keep: float = 0.8, dx: float = 0.5, dy: float = 0.5) -> Image.Image:
    """Keep ``keep`` of each side; dx, dy place the window (0.5 = centred)."""
    w, h = img.size
    cw, ch = round(w * keep), round(h * keep)
    x, y = round((w - cw) * dx), round((h - ch) * dy)
    return img.crop((x, y, x + cw, y + ch))


def t_mirror(img: Image.Image) -> Image.Image:
    return ImageOps.mirror(img)


def t_watermark_text(img: Image.Image, text: str = "© MyShop.example") -> Image.Image:
    img = img.convert("RGBA")
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    size = max(10, img.width // 10)
    font = _font(size)
    for k, y in enumerate(range(size, img.height, img.height // 3)):
        draw.text((img.width // 12 + k * size, y), text, fill=(255, 255, 255, 150), font=font, stroke_width=1,
                  stroke_fill=(0, 0, 0, 110))  # fmt: skip
    return Image.alpha_composite(img, layer).convert("RGB")


def t_watermark_logo(img: Image.Image) -> Image.Image:
    """An opaque shop badge in a corner (about 1/4 of the width)."""
    img = img.convert("RGB").copy()
    s = max(12, img.width // 4)
    badge = Image.new("RGB", (s, s), (220, 30, 40))
    draw = ImageDraw.Draw(badge)
    draw.ellipse((s // 8, s // 8, s - s // 8, s - s // 8), fill=(255, 255, 255))
    draw.text((s // 4, s // 3), "SHOP", fill=(220, 30, 40), font=_font(max(6, s // 5)))
    img.paste(badge, (img.width - s - img.width // 20, img.height - s - img.height // 20))
    return img


def t_colour(img: Image.Image, hue: int = 20, saturation: float = 1.4, brightness: float = 1.1) -> Image.Image:
    """Hue rotation (of 256), saturation and brightness change."""
    hsv = np.asarray(img.convert("RGB").convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + hue) % 256
    out = Image.fromarray(hsv, "HSV").convert("RGB")
    out = ImageEnhance.Color(out).enhance(saturation)
    return ImageEnhance.Brightness(out).enhance(brightness)


def _chain(*steps):
    def run(img: Image.Image) -> Image.Image:
        for step in steps:
            img = step(img)
        return img

    return run


# name -> PIL -> PIL. The combinations are what a copier does in practice: crop the
# competitor's shot, mirror it so it looks new, stamp a logo, save it small.
TRANSFORMS = {
    "resize_half": lambda im: t_resize(im, 0.5),
    "resize_double": lambda im: t_resize(im, 2.0),
    "jpeg_q25": lambda im: t_jpeg(im, 25),
    "crop_centre_80": lambda im: t_crop(im, 0.8),
    "crop_corner_75": lambda im: t_crop(im, 0.75, 0.0, 0.0),
    "mirror": t_mirror,
    "watermark_text": t_watermark_text,
    "watermark_logo": t_watermark_logo,
    "colour_shift": t_colour,
    "grey": lambda im: ImageOps.grayscale(im).convert("RGB"),
    "mirror+crop+jpeg": _chain(t_mirror, lambda im: t_crop(im, 0.85, 0.3, 0.6), lambda im: t_jpeg(im, 40)),
    "resize+watermark+colour": _chain(lambda im: t_resize(im, 1.5), t_watermark_text, lambda im: t_colour(im, -12)),
    "crop+logo+mirror": _chain(lambda im: t_crop(im, 0.8, 1.0, 0.5), t_watermark_logo, t_mirror),
}

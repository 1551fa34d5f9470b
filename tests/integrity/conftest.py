import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from search.live import live_index_reset


@pytest.fixture
def copy_engine(settings, auto_index):
    """Ingestion with the raw-pixel embedder (real code paths, no weights) and copy
    thresholds for it: raw pixels of a 15% crop stay above 0.9 cosine, different
    synthetic photos stay far below."""
    settings.VISUALSHOP_EMBEDDER = "pixels"
    settings.SEARCH_DETECTOR = "none"
    settings.REVIEW_SPOT_CHECK_FRACTION = 0.0
    settings.INDEX_RELOAD_SECONDS = 0
    settings.COPY_MAX_HASH_DISTANCE = 10
    settings.COPY_MIN_SIMILARITY = 0.9
    live_index_reset()
    yield settings
    live_index_reset()


def scene(seed: int, size: tuple[int, int] = (240, 200)) -> Image.Image:
    """A synthetic product shot: a smooth background and a few large shapes, all from the seed.
    The left and right halves differ, so a mirror image is a different picture."""
    rng = np.random.default_rng(seed)
    w, h = size
    x = np.linspace(0, 1, w)[None, :, None]
    y = np.linspace(0, 1, h)[:, None, None]
    c0, c1, c2 = rng.integers(0, 255, (3, 3))
    bg = c0 * (1 - x) * (1 - y) + c1 * x + c2 * y * (1 - x)
    img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(5):
        x0, y0 = rng.integers(0, w * 3 // 4), rng.integers(0, h * 3 // 4)
        x1, y1 = x0 + rng.integers(w // 6, w // 2), y0 + rng.integers(h // 6, h // 2)
        fill = tuple(int(v) for v in rng.integers(0, 255, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=fill)
    draw.rectangle((w // 12, h // 10, w // 3, h // 4), fill=(250, 250, 250))  # a label on the left only
    return img


def encode(img: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    out = io.BytesIO()
    img.convert("RGB").save(out, format=fmt, **({"quality": 92} | kw) if fmt == "JPEG" else kw)
    return out.getvalue()

"""The search pipeline: decode -> detect -> choose box -> crop -> embed -> search -> group
-> rerank, built from stage objects with one typed config (PP-ShiTu's predict_system,
without its prints, exits and pickled id maps).

Every caller goes through :meth:`SearchPipeline.run`: the search API, the upload page and
the offline evaluation (vision.evaluate), so the numbers the evaluation reports are the
numbers of the code that serves.

Coordinates: boxes in a :class:`SearchResult` and a caller-given ``box`` are in pixels of
the image as uploaded (after EXIF orientation, before the downscale to ``max_side``), so a
client can draw them on its own copy and send one back to search again with it.
"""

from __future__ import annotations

import dataclasses
import io
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, NamedTuple

import numpy as np
from PIL import Image

from vision.detect import (
    NANODET_INPUT_SIZE,
    USER_LABEL,
    WHOLE_IMAGE_LABEL,
    Box,
    BoxChoice,
    choose_box,
    detect_with_whole_image,
    make_detector,
    validate_box,
    whole_image_box,
)
from vision.embed import Embedder
from vision.imageio import ImageInfo, decode_image, downscale, to_rgb
from vision.index import group_by_product


class Hit(NamedTuple):
    product_id: int
    score: float  # SearchConfig.product_images: the mean of the product's best images
    image_id: int  # the product's best image
    best: float  # that image's score


Reranker = Callable[[list[Hit]], list[Hit]]


def identity_rerank(hits: list[Hit]) -> list[Hit]:
    return hits


# The box-choice rule, chosen on the Grocery Store *review* photos (880 of them, each
# searched against the catalog and against the other reviews; the query photos were not
# used), NanoDet boxes, MobileNetV2. Those are close-ups where the product fills the frame:
# - boxes under half the image were single fruits of a pile, a label or a hand, and
#   cropping to them cost up to 45 points of recall@1 on those photos;
# - boxes over half the image were neutral to slightly helpful (0.93 -> 0.95);
# - "person" was the most frequent top box (the shopper's hand around the product);
# - 25% padding beat 0 and 10% (the crop keeps the context the gallery photos have).
# This rule vs the whole image on the 880: recall@1 0.964 vs 0.964 (with reviews) and 0.361
# vs 0.360 (catalog only): neutral, with a third of the photos cropped. Checked once on the
# held-out queries: 0.622 vs 0.622 (with reviews), 0.358 vs 0.368 (catalog only, 3 of 296).
# Tighter crops should pay off on shelf photos with small products: lower min_area there.
DEFAULT_BOX_CHOICE = BoxChoice(min_score=0.3, min_area=0.5)


@dataclass(frozen=True)
class SearchConfig:
    """Everything that changes what a search returns, in one place.

    ``box_choice`` decides when a detector box is embedded instead of the whole image
    (see :data:`DEFAULT_BOX_CHOICE` for the rule and how it was chosen).
    """

    max_side: int = 1024
    # Without the shopper's box, the photo is decoded at most this size: the detector sees
    # 384 px and the crop it chooses covers half the photo or more (DEFAULT_BOX_CHOICE), so
    # it still has over 256 px for the embedder's resize. JPEG decodes at 1/2 scale
    # (draft), and the detector's and embedder's resizes start from a quarter of the
    # pixels. A smaller crop (a shopper's box, or a detector box under a lower min_area)
    # is cut from the photo decoded at max_side instead.
    work_side: int = 512
    min_crop_side: int = 256
    detector: str = "nanodet"
    # NanoDet's input side (a multiple of 32): the largest cost of a search. Smaller is
    # cheaper and finds the product's box less often (README, "Search quality" and "Load").
    nanodet_size: int = NANODET_INPUT_SIZE
    box_choice: BoxChoice = field(default_factory=lambda: DEFAULT_BOX_CHOICE)
    ignore_labels: tuple[str, ...] = ("person",)  # never chosen automatically: not products
    crop_pad: float = 0.25  # context added around a crop, as a fraction of the box side
    top_n: int = 100  # image hits taken from the index before grouping by product
    k: int = 10  # products returned
    # A product scores as the mean of its this many best images among the top_n hits
    # (vision.index.group_by_product); 1: its best image alone. 5 was chosen on the
    # distinct split of the review photos, by a rule written before (README).
    product_images: int = 5

    def pad_for(self, box_from_user: bool) -> float:
        """Context around the crop: a shopper's box is taken as drawn, a chosen one padded."""
        return 0.0 if box_from_user else self.crop_pad

    def __post_init__(self) -> None:
        if self.max_side < 32 or self.work_side < 32:
            raise ValueError("max_side and work_side must be >= 32")
        if self.crop_pad < 0:
            raise ValueError("crop_pad must be >= 0")
        if WHOLE_IMAGE_LABEL in self.ignore_labels:
            raise ValueError("the whole-image candidate cannot be ignored: it is the fallback")
        if self.top_n < 1 or self.k < 1 or self.product_images < 1:
            raise ValueError("top_n, k and product_images must be >= 1")
        if self.nanodet_size < 64 or self.nanodet_size % 32:
            raise ValueError(f"nanodet_size must be a multiple of 32 from 64, got {self.nanodet_size}")

    def detector_options(self) -> dict[str, Any]:
        """What :func:`vision.detect.make_detector` takes besides ``detector``."""
        return {"input_size": self.nanodet_size} if self.detector == "nanodet" else {}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchConfig:
        data = dict(data)
        if isinstance(data.get("box_choice"), Mapping):
            data["box_choice"] = BoxChoice(**data["box_choice"])
        if "ignore_labels" in data:
            data["ignore_labels"] = tuple(data["ignore_labels"])
        return cls(**data)


@dataclass(frozen=True, eq=False)
class SearchResult:
    boxes: list[Box]  # candidates (whole image included), uploaded-image pixels
    chosen: int  # index into boxes of the box that was embedded
    hits: list[Hit]  # best first, at most k
    timings_ms: dict[str, float]  # decode, detect, embed, search, rerank, total
    image_size: tuple[int, int]  # uploaded image (width, height)
    embedding: np.ndarray  # [dim] float32, the query vector (for logs and same-item checks)
    image: Image.Image | None = None  # the decoded upload as searched (work_side or max_side)

    @property
    def box(self) -> Box:
        return self.boxes[self.chosen]


def crop(image: Image.Image, box: Box | Sequence[float], pad_frac: float = 0.0) -> Image.Image:
    """The box plus ``pad_frac`` of its width/height on each side, clipped to the image.

    The whole-image candidate returns ``image`` itself (no copy)."""
    if isinstance(box, Box):
        if box.label == WHOLE_IMAGE_LABEL:
            return image
        x1, y1, x2, y2 = box.x1, box.y1, box.x2, box.y2
    else:
        x1, y1, x2, y2 = box[:4]
    w, h = image.size
    px, py = (x2 - x1) * pad_frac, (y2 - y1) * pad_frac
    left, top = min(w - 1, max(0, int(round(x1 - px)))), min(h - 1, max(0, int(round(y1 - py))))
    right, bottom = min(w, int(round(x2 + px))), min(h, int(round(y2 + py)))
    right, bottom = max(right, left + 1), max(bottom, top + 1)  # never empty
    if (left, top, right, bottom) == (0, 0, w, h):
        return image
    return image.crop((left, top, right, bottom))


class SearchPipeline:
    """detector + embedder + index (+ reranker) under one :class:`SearchConfig`.

    Stateless per call and safe to share between threads as long as the stages are
    (torch modules in eval mode and faiss searches are). Build one per process.
    """

    def __init__(
        self,
        detector: Any,
        embedder: Embedder,
        index: Any,
        image_to_product: Mapping[int, int] | Callable[[int], int | None],
        config: SearchConfig | None = None,
        reranker: Reranker | None = None,
    ) -> None:
        index_version = getattr(index, "version", "")
        if index_version and index_version != embedder.version:
            # Vectors of two embedder versions are not comparable: refuse, don't degrade.
            raise ValueError(f"index holds {index_version!r} vectors, embedder is {embedder.version!r}")
        index_dim = getattr(index, "dim", embedder.dim)
        if index_dim != embedder.dim:
            raise ValueError(f"index dimension {index_dim} != embedder dimension {embedder.dim}")
        self.detector = detector
        self.embedder = embedder
        self.index = index
        self.image_to_product = image_to_product
        self.config = config or SearchConfig()
        self.reranker: Reranker = reranker or identity_rerank

    @classmethod
    def from_config(
        cls,
        config: SearchConfig,
        *,
        embedder: Embedder,
        index: Any,
        image_to_product: Mapping[int, int] | Callable[[int], int | None],
        reranker: Reranker | None = None,
    ) -> SearchPipeline:
        detector = make_detector(config.detector, **config.detector_options())
        return cls(detector, embedder, index, image_to_product, config, reranker)

    # ------------------------------------------------------------------ stages

    def load(
        self, source: bytes | BinaryIO | Image.Image, max_side: int | None = None
    ) -> tuple[Image.Image, ImageInfo]:
        """Decode (validated, EXIF-oriented, RGB) and downscale to ``max_side`` (default:
        the config's). A PIL image is taken as already decoded and oriented (the caller's
        own, trusted image)."""
        max_side = min(max_side or self.config.max_side, self.config.max_side)
        if isinstance(source, Image.Image):
            rgb = to_rgb(source)
            return downscale(rgb, max_side), ImageInfo("PIL", rgb.width, rgb.height)
        if isinstance(source, (bytearray, memoryview)):
            source = bytes(source)
        return decode_image(source, max_side=max_side)

    def candidates(self, image: Image.Image) -> tuple[list[Box], int]:
        """Detector boxes plus the whole-image candidate, and the index of the one to embed."""
        w, h = image.size
        if self.detector is None:
            return [whole_image_box(w, h)], 0
        boxes = detect_with_whole_image(self.detector, image)
        eligible = [i for i, b in enumerate(boxes) if b.label not in self.config.ignore_labels]
        chosen = choose_box([boxes[i] for i in eligible], w, h, self.config.box_choice)
        return boxes, eligible[chosen]

    def search_vector(self, vector: np.ndarray, k: int) -> list[Hit]:
        assert vector.shape == (1, self.embedder.dim), vector.shape
        top_n = max(self.config.top_n, k)
        scores, ids = self.index.search(vector, top_n)
        return [Hit(*h) for h in group_by_product(scores, ids, self.image_to_product, k, self.config.product_images)]

    # ------------------------------------------------------------------ the whole run

    def run(
        self,
        image: bytes | BinaryIO | Image.Image,
        box: Sequence[float] | None = None,
        k: int | None = None,
        reranker: Reranker | None = None,
    ) -> SearchResult:
        """One search. ``box`` (x1, y1, x2, y2 in uploaded-image pixels) skips detection and
        is used as given; ``reranker`` overrides the pipeline's one for this call (the
        shopper's personalised ranking). Raises vision.imageio.ImageError on a bad upload
        and ValueError on a bad box."""
        k = k or self.config.k
        if hasattr(image, "read"):
            image = image.read()  # may be decoded twice (see work_side)
        t0 = time.perf_counter()
        img, info = self.load(image, max_side=None if box is not None else self.config.work_side)
        # Exact ratio per axis: downscale() rounds each side separately.
        sx, sy = img.width / info.width, img.height / info.height
        t1 = time.perf_counter()

        if box is not None:
            given = validate_box(tuple(box), info.width, info.height)
            boxes = [Box(given.x1 * sx, given.y1 * sy, given.x2 * sx, given.y2 * sy, 1.0, USER_LABEL)]
            chosen = 0
        else:
            boxes, chosen = self.candidates(img)
        t2 = time.perf_counter()

        pad = self.config.pad_for(box is not None)
        region = crop(img, boxes[chosen], pad)
        sharper = max(img.size) < min(self.config.max_side, max(info.width, info.height))
        if min(region.size) < self.config.min_crop_side and sharper:
            full, _ = self.load(image)
            region = crop(full, boxes[chosen].scaled(full.width / img.width, full.height / img.height), pad)
        vector = self.embedder.embed([region])
        t3 = time.perf_counter()

        hits = self.search_vector(vector, k)
        t4 = time.perf_counter()
        hits = list((reranker or self.reranker)(hits))[:k]
        t5 = time.perf_counter()

        ms = lambda a, b: (b - a) * 1000.0  # noqa: E731
        timings = {
            "decode": ms(t0, t1),
            "detect": ms(t1, t2),
            "embed": ms(t2, t3),
            "search": ms(t3, t4),
            "rerank": ms(t4, t5),
            "total": ms(t0, t5),
        }
        back = [b.scaled(1 / sx, 1 / sy) for b in boxes]
        return SearchResult(
            boxes=back,
            chosen=chosen,
            hits=hits,
            timings_ms=timings,
            image_size=(info.width, info.height),
            embedding=vector[0],
            image=img,
        )


def image_bytes(image: Image.Image, fmt: str = "JPEG", quality: int = 90) -> bytes:
    """Encode a PIL image (benchmarks and tests feed the pipeline real upload bytes)."""
    buf = io.BytesIO()
    image.save(buf, format=fmt, quality=quality)
    return buf.getvalue()


__all__ = [
    "DEFAULT_BOX_CHOICE",
    "Hit",
    "Reranker",
    "SearchConfig",
    "SearchPipeline",
    "SearchResult",
    "crop",
    "identity_rerank",
    "image_bytes",
]

"""Photo search as a use case: pipeline, filters, rerank hook, and the log for learning."""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import OuterRef, QuerySet, Subquery
from PIL import Image

from catalog.models import Category, Merchant, Product, ProductImage
from catalog.selectors import category_with_descendants
from search.models import Impression, SearchQuery
from vision.imageio import decode_image, strip_jpeg_metadata

EXIF_ORIENTATION = 0x0112

# Products taken from the index before filters: enough that a selective filter still
# leaves k, while grouping stays cheap (measured in benchmarks/search_path_bench.py).
CANDIDATES_PER_RESULT = 4
MIN_CANDIDATES = 50


@dataclass(frozen=True)
class SearchFilters:
    category: Category | None = None
    merchant: Merchant | None = None
    min_price: Decimal | None = None
    max_price: Decimal | None = None
    in_stock: bool | None = None

    def as_log(self) -> dict:
        out = {k: str(v) for k, v in asdict(self).items() if v is not None and not isinstance(v, (Category, Merchant))}
        if self.category:
            out["category"] = self.category.slug
        if self.merchant:
            out["merchant"] = self.merchant.slug
        return out


@dataclass(frozen=True)
class Ranked:
    product_id: int
    score: float  # visual similarity (SearchConfig.product_images)
    rank_score: float | None = None
    best: float | None = None  # the similarity of the product's best image; None: score


@dataclass(frozen=True)
class SearchItem:
    product: Product
    position: int
    score: float  # visual similarity
    rank_score: float | None = None


@dataclass(frozen=True)
class SearchOutcome:
    query: SearchQuery
    boxes: list  # vision.detect.Box, uploaded-image pixels
    chosen: int
    items: list[SearchItem]
    timings_ms: dict[str, float]  # the stored ones plus "log", the time to write the log


def filtered_products(*, product_ids: Sequence[int], filters: SearchFilters) -> QuerySet[Product]:
    qs = Product.objects.filter(pk__in=product_ids, is_active=True)
    if filters.category is not None:
        qs = qs.filter(category_id__in=category_with_descendants(filters.category))
    if filters.merchant is not None:
        qs = qs.filter(merchant=filters.merchant)
    if filters.min_price is not None:
        qs = qs.filter(price__gte=filters.min_price)
    if filters.max_price is not None:
        qs = qs.filter(price__lte=filters.max_price)
    if filters.in_stock:
        qs = qs.filter(stock__gt=0)
    return qs


@dataclass(frozen=True)
class RerankContext:
    """What a reranker may know about the search besides the candidates."""

    label: str  # the chosen box's detector label ("image": whole photo, "user": drawn by the shopper)
    user_id: int | None
    session_key: str
    k: int  # results to be shown


@dataclass(frozen=True)
class Reranking:
    ranked: list[Ranked]
    version: str = ""  # the ranker version that ordered them; "" = visual order


# A reranker reorders the filtered candidates (product_id, visual score), given in visual
# order, and may attach its own score; it fetches whatever features it needs in bulk.
# Product rows are loaded only for the k that are shown.
Reranker = Callable[[list[Ranked], RerankContext], Reranking]


def visual_order(candidates: list[Ranked], context: RerankContext) -> Reranking:
    """The visual order: what search shows when no CTR model is live."""
    return Reranking(candidates)


def live_rerank(candidates: list[Ranked], context: RerankContext) -> Reranking:
    """The live CTR ranker (ranking.live), or the visual order when none is live."""
    from ranking.live import ranker_rerank

    return ranker_rerank(candidates, context)


def _log_photo(upload: bytes, result, max_side: int) -> tuple[ContentFile, str]:
    """The query photo without EXIF, GPS or any other metadata, upright, at most max_side.

    An upright JPEG that needs no downscale (what the upload page sends) is kept as it
    came with its metadata segments cut out: no re-encoding, no quality lost, ~4 ms saved.
    Anything else is re-encoded from its pixels at max_side (the search itself may have
    decoded it smaller: SearchConfig.work_side).
    """
    data = None
    if max(result.image_size) <= max_side:
        with Image.open(io.BytesIO(upload)) as probe:
            if probe.format == "JPEG" and probe.getexif().get(EXIF_ORIENTATION, 1) == 1:
                data = strip_jpeg_metadata(upload)
    if data is None:
        image = result.image
        if max(image.size) < min(max_side, max(result.image_size)):
            image = decode_image(upload, max_side=max_side)[0]
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=85)
        data = out.getvalue()
    return ContentFile(data, name="query.jpg"), hashlib.sha256(data).hexdigest()


def photo_search(
    *,
    image: bytes,
    box: tuple[float, float, float, float] | None = None,
    k: int,
    filters: SearchFilters,
    channel: str,
    user: AbstractBaseUser | None = None,
    session_key: str = "",
    rerank: Reranker = live_rerank,
) -> SearchOutcome:
    """Search the live index with a photo and log the query with what was shown.

    Raises vision.imageio.ImageError for a bad image and ValueError for a bad box; in
    both cases nothing is written.
    """
    from search.pipeline import search_pipeline

    pipeline, live = search_pipeline()
    result = pipeline.run(image, box=box, k=max(MIN_CANDIDATES, k * CANDIDATES_PER_RESULT))
    t0 = time.perf_counter()
    allowed = set(
        filtered_products(product_ids=[h.product_id for h in result.hits], filters=filters).values_list("pk", flat=True)
    )
    candidates = [
        Ranked(h.product_id, float(h.score), best=float(h.best)) for h in result.hits if h.product_id in allowed
    ]
    t1 = time.perf_counter()
    user_id = user.pk if user is not None and user.is_authenticated else None
    chosen = result.boxes[result.chosen]
    context = RerankContext(label=chosen.label, user_id=user_id, session_key=session_key or "", k=k)
    reranking = rerank(candidates, context)
    shown = reranking.ranked[:k]
    t_ranked = time.perf_counter()
    first_image = ProductImage.objects.filter(product=OuterRef("pk")).order_by("position", "pk").values("file")[:1]
    products = (
        Product.objects.select_related("merchant")
        .annotate(first_image=Subquery(first_image))
        .in_bulk([c.product_id for c in shown])
    )
    items = [
        SearchItem(product=products[c.product_id], position=i + 1, score=c.score, rank_score=c.rank_score)
        for i, c in enumerate(shown)
    ]
    t2 = time.perf_counter()
    timings = {
        **result.timings_ms,
        "filter": (t1 - t0) * 1000,
        "rerank": (t2 - t1) * 1000,  # the ranker, then loading the shown rows
        "ranker": (t_ranked - t1) * 1000,
    }
    photo, sha = _log_photo(image, result, pipeline.config.max_side)
    with transaction.atomic():
        query = SearchQuery(
            channel=channel,
            user=user if user is not None and user.is_authenticated else None,
            session_key=session_key or "",
            photo_sha256=sha,
            width=result.image_size[0],
            height=result.image_size[1],
            boxes=[_box_json(b) for b in result.boxes],
            chosen_box=_box_json(chosen),
            box_from_user=box is not None,
            filters=filters.as_log(),
            k=k,
            embedder_version=live.embedder.version,
            index_generation=live.generation,
            ranker_version=reranking.version,
            timings_ms={name: round(ms, 2) for name, ms in timings.items()},
        )
        query.photo.save(photo.name, photo, save=False)
        query.save()
        Impression.objects.bulk_create(
            Impression(query=query, product=it.product, position=it.position, score=it.score, rank_score=it.rank_score)
            for it in items
        )
    timings["log"] = (time.perf_counter() - t2) * 1000
    return SearchOutcome(query=query, boxes=result.boxes, chosen=result.chosen, items=items, timings_ms=timings)


def _box_json(box) -> dict:
    return {
        "x1": round(box.x1, 1),
        "y1": round(box.y1, 1),
        "x2": round(box.x2, 1),
        "y2": round(box.y2, 1),
        "score": round(float(box.score), 4),
        "label": box.label,
    }

import datetime as dt
from decimal import Decimal

import numpy as np
import pytest
from django.utils import timezone

from ranking.live import ranker_cache_reset
from search.live import live_index_reset
from search.models import Click, Impression, SearchQuery
from tests.factories import CategoryFactory, MerchantFactory, ProductFactory


@pytest.fixture(autouse=True)
def _fresh_ranker_cache(settings):
    settings.RANKER_RELOAD_SECONDS = 0
    settings.RANKER_STATS_SECONDS = 0
    ranker_cache_reset()
    yield
    ranker_cache_reset()


@pytest.fixture
def pixel_engine(settings, auto_index):
    """Ingestion and search with the raw-pixel embedder: real code paths, no weights."""
    settings.VISUALSHOP_EMBEDDER = "pixels"
    settings.SEARCH_DETECTOR = "none"
    settings.REVIEW_SPOT_CHECK_FRACTION = 0.0
    settings.INDEX_RELOAD_SECONDS = 0
    live_index_reset()
    yield settings
    live_index_reset()


def log_search(*, at, products, scores, clicked=(), session_key="", user=None, label="image", click_delay_s=5):
    """One logged search shown in the given order (position 1 first), with clicks."""
    q = SearchQuery.objects.create(
        channel="web", session_key=session_key, user=user, width=10, height=10, k=len(products),
        chosen_box={"label": label}, embedder_version="test", index_generation=1,
    )  # fmt: skip
    SearchQuery.objects.filter(pk=q.pk).update(created_at=at)
    imps = Impression.objects.bulk_create(
        Impression(query=q, product=p, position=i + 1, score=s) for i, (p, s) in enumerate(zip(products, scores))
    )
    for imp in imps:
        if imp.product in clicked:
            c = Click.objects.create(impression=imp)
            Click.objects.filter(pk=c.pk).update(created_at=at + dt.timedelta(seconds=click_delay_s))
    return q


@pytest.fixture
def synthetic_logs(db):
    """Searches whose clicks follow price (cheap ones win) more than visual order.

    12 products, two categories; each search shows 6 in visual order; a shopper clicks
    the cheapest shown with probability 0.8/position**0.3 and others rarely: the visual
    order is weak, a model with the price features is not."""
    rng = np.random.default_rng(0)
    cats = [CategoryFactory(name="Fruit", slug="fruit"), CategoryFactory(name="Juice", slug="juice")]
    merchant = MerchantFactory(name="M")
    products = [
        ProductFactory(merchant=merchant, category=cats[i % 2], price=Decimal(str(1 + i * 0.7))) for i in range(12)
    ]
    start = timezone.now() - dt.timedelta(days=10)
    for n in range(240):
        shown = list(rng.choice(len(products), size=6, replace=False))
        scores = sorted(rng.uniform(0.3, 0.9, size=6), reverse=True)
        cheapest = min(shown, key=lambda i: products[i].price)
        clicked = []
        for pos, i in enumerate(shown, start=1):
            p = (0.8 if i == cheapest else 0.03) / pos**0.3
            if rng.random() < p:
                clicked.append(products[i])
        log_search(
            at=start + dt.timedelta(minutes=30 * n), products=[products[i] for i in shown], scores=scores,
            clicked=clicked, session_key=f"s{n % 15}",
        )  # fmt: skip
    return products

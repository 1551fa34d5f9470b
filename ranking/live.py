"""Live CTR reranking, as web processes do it.

The live model: each process keeps the live RankerVersion in memory (compiled to numpy,
ranking.learners.compile_scorer) and checks which one is live at most every
RANKER_RELOAD_SECONDS (one indexed query); a change is picked up within that interval,
and "no live version" means the visual order.

The blend (rank_score, what is logged in Impression.rank_score):

    rank_score = model logit + RANKER_VISUAL_WEIGHT * visual similarity + freshness boost

and a near-exact visual match is never buried: candidates whose best image's similarity
is at least RANKER_EXACT_MATCH_SCORE come first, in visual order, whatever the model says
(a shopper who photographs the very product must see it first).

Freshness boost, per category: RANKER_FRESHNESS_WEIGHT * 0.5 ** (age_days / half_life),
where the half-life is a quarter of the median age of the category's active products,
clamped to 7..90 days. A product is "new" relative to how long its category's products
usually stay: in a category of long-lived classics (a year old on median) a two-month-old
product still gets most of the boost, in a fast-turnover category it has faded. New
products have no click history, so without it the classics' smoothed CTR keeps them down.

Per search: one query for the shopper's last clicks (none when anonymous without a
session). Product facts (price, category, merchant, age), category tokens, click
statistics and category ages are cached per process for RANKER_STATS_SECONDS (a product
created since is read on the spot), so a price change reaches the ranker's features
within that interval.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, replace
from statistics import median

import numpy as np
from django.conf import settings
from django.utils import timezone

from ranking.features import (
    FEATURES,
    ProductFacts,
    Stats,
    category_tokens_all,
    feature_matrix,
    product_facts,
    shopper_clicked_ids,
    shopper_from_clicks,
    stats_all,
)
from ranking.learners import compile_scorer
from ranking.models import RankerVersion
from search.searching import Ranked, RerankContext, Reranking

logger = logging.getLogger(__name__)

# The model reorders only the first DEPTH_PER_RESULT * k candidates in visual order: it
# was trained on what was shown (visual ranks 1..k under the visual order), and scoring
# candidates far outside that range promoted cheap look-alikes in the simulator (clicks
# per search fell from 0.98 to 0.62 when all 50 were reranked). 2k leaves room to explore.
DEPTH_PER_RESULT = 2
HALF_LIFE_MIN_DAYS = 7.0
HALF_LIFE_MAX_DAYS = 90.0


@dataclass(frozen=True)
class LiveRanker:
    pk: int
    version: str
    kind: str
    scorer: object  # X -> logit


@dataclass(frozen=True)
class LiveInputs:
    category_tokens: dict[int, frozenset[str]]
    stats: Stats
    half_life_days: dict[int | None, float]
    facts: dict[int, ProductFacts]  # active products: price, category, merchant, created_at


_lock = threading.Lock()
_ranker: LiveRanker | None = None
_checked_at = -math.inf
_inputs: LiveInputs | None = None
_inputs_at = -math.inf


def ranker_cache_reset() -> None:
    """Forget the cached model and statistics (tests; after bulk changes)."""
    global _ranker, _checked_at, _inputs, _inputs_at
    with _lock:
        _ranker, _checked_at, _inputs, _inputs_at = None, -math.inf, None, -math.inf


def live_ranker() -> LiveRanker | None:
    """The live version, compiled; reloaded when another one goes live."""
    global _ranker, _checked_at
    now = time.monotonic()
    if now - _checked_at < settings.RANKER_RELOAD_SECONDS:
        return _ranker
    with _lock:
        row = RankerVersion.objects.filter(is_live=True).values_list("pk", "version").first()
        _checked_at = now
        if row is None:
            _ranker = None
        elif _ranker is None or _ranker.pk != row[0]:
            from ranking.services import ranker_load

            obj = RankerVersion.objects.get(pk=row[0])
            loaded = ranker_load(obj.model)
            if loaded["features"] != FEATURES:
                logger.error("live ranker %s has features %s, this code %s: visual order", obj.version,
                             loaded["features"], FEATURES)  # fmt: skip
                _ranker = None
            else:
                _ranker = LiveRanker(obj.pk, obj.version, obj.kind, compile_scorer(loaded["estimator"]))
                logger.info("live ranker %s (%s) loaded", obj.version, obj.kind)
        return _ranker


def category_half_lives() -> dict[int | None, float]:
    from catalog.models import Product

    now = timezone.now()
    ages: dict[int | None, list[float]] = {}
    for cat, created in Product.objects.filter(is_active=True).values_list("category_id", "created_at"):
        ages.setdefault(cat, []).append((now - created).total_seconds() / 86400)
    return {c: min(HALF_LIFE_MAX_DAYS, max(HALF_LIFE_MIN_DAYS, median(a) / 4)) for c, a in ages.items()}


def live_inputs() -> LiveInputs:
    global _inputs, _inputs_at
    now = time.monotonic()
    if _inputs is not None and now - _inputs_at < settings.RANKER_STATS_SECONDS:
        return _inputs
    with _lock:
        from catalog.models import Product

        facts = product_facts(Product.objects.filter(is_active=True).values_list("pk", flat=True))
        _inputs = LiveInputs(category_tokens_all(), stats_all(), category_half_lives(), facts)
        _inputs_at = now
        return _inputs


def freshness_boost(*, age_days: np.ndarray, half_life_days: np.ndarray, weight: float) -> np.ndarray:
    return weight * np.power(0.5, np.maximum(age_days, 0.0) / half_life_days)


def blend(
    *,
    candidates: list[Ranked],
    logits: np.ndarray,
    boost: np.ndarray,
    visual_weight: float,
    exact_match: float,
) -> list[Ranked]:
    """Order by the blended score, near-exact visual matches first (in visual order): a
    candidate whose best image scores at least ``exact_match``."""
    visual = np.array([c.score for c in candidates])
    final = logits + visual_weight * visual + boost
    exact = np.array([c.score if c.best is None else c.best for c in candidates]) >= exact_match
    # exact matches first by visual score; the rest by the blended score; ties keep visual order
    key = np.where(exact, visual, final)
    order = sorted(range(len(candidates)), key=lambda i: (not exact[i], -key[i], i))
    return [replace(candidates[i], rank_score=float(final[i])) for i in order]


def ranker_rerank(candidates: list[Ranked], context: RerankContext) -> Reranking:
    """The search hook: the live model's blended order, or the visual order."""
    ranker = live_ranker()
    if ranker is None or not candidates:
        return Reranking(candidates)
    candidates, rest = candidates[: DEPTH_PER_RESULT * context.k], candidates[DEPTH_PER_RESULT * context.k :]
    try:
        inputs = live_inputs()
        facts = inputs.facts
        missing = [c.product_id for c in candidates if c.product_id not in facts]
        if missing:  # created since the snapshot
            facts = {**facts, **product_facts(missing)}
        clicked = shopper_clicked_ids(user_id=context.user_id, session_key=context.session_key)
        missing = [pid for pid in clicked if pid not in facts]
        if missing:
            facts = {**facts, **product_facts(missing)}
        shopper = shopper_from_clicks(clicked, facts)
        now = timezone.now()
        X = feature_matrix(
            candidates=[(c.product_id, c.score) for c in candidates],
            products=facts,
            label=context.label,
            category_tokens=inputs.category_tokens,
            stats=inputs.stats,
            shopper=shopper,
            now=now,
            reference=context.k,
        )
        logits = ranker.scorer(X)
        age = np.array([
            (now - facts[c.product_id].created_at).total_seconds() / 86400 if c.product_id in facts else 1e6
            for c in candidates
        ])  # fmt: skip
        half = np.array([
            inputs.half_life_days.get(facts[c.product_id].category_id, HALF_LIFE_MIN_DAYS)
            if c.product_id in facts else HALF_LIFE_MIN_DAYS
            for c in candidates
        ])  # fmt: skip
        boost = freshness_boost(age_days=age, half_life_days=half, weight=settings.RANKER_FRESHNESS_WEIGHT)
        ranked = blend(
            candidates=candidates,
            logits=logits,
            boost=boost,
            visual_weight=settings.RANKER_VISUAL_WEIGHT,
            exact_match=settings.RANKER_EXACT_MATCH_SCORE,
        )
    except Exception:  # a broken ranker must not break search
        logger.exception("ranker %s failed: visual order", ranker.version)
        return Reranking(candidates + rest)
    return Reranking(ranked + rest, ranker.version)

"""Live reranking: the live model orders search, visual order without one, the blend rules."""

import datetime as dt
from decimal import Decimal

import numpy as np
import pytest
from django.utils import timezone

from catalog.services import product_image_add
from ranking import live
from ranking.live import blend, freshness_boost, ranker_rerank
from ranking.models import RankerVersion
from ranking.services import ranker_back_to_visual_order, ranker_make_live, ranker_train
from search.models import SearchQuery
from search.searching import Ranked, RerankContext, SearchFilters, photo_search
from tests.factories import CategoryFactory, ProductFactory
from tests.search.test_ingestion import photo

CTX = RerankContext(label="image", user_id=None, session_key="", k=10)


def test_near_exact_visual_match_stays_first_whatever_the_model_says():
    cands = [Ranked(1, 0.97), Ranked(2, 0.60), Ranked(3, 0.55)]
    logits = np.array([-10.0, 5.0, 3.0])  # the model hates the exact match
    ranked = blend(candidates=cands, logits=logits, boost=np.zeros(3), visual_weight=1.0, exact_match=0.92)
    assert [r.product_id for r in ranked] == [1, 2, 3]
    # below the threshold the model decides
    ranked = blend(candidates=cands, logits=logits, boost=np.zeros(3), visual_weight=1.0, exact_match=0.98)
    assert [r.product_id for r in ranked] == [2, 3, 1]
    assert ranked[0].rank_score == pytest.approx(5.6) and ranked[0].score == 0.60
    # a product scored by the mean of its best images counts as exact by its best image alone
    cands = [Ranked(1, 0.80, best=0.97), Ranked(2, 0.85, best=0.90), Ranked(3, 0.55)]
    ranked = blend(candidates=cands, logits=logits, boost=np.zeros(3), visual_weight=1.0, exact_match=0.92)
    assert [r.product_id for r in ranked] == [1, 2, 3] and ranked[0].best == 0.97


def test_freshness_boost_decays_with_age_relative_to_the_category():
    boost = freshness_boost(age_days=np.array([0.0, 30.0, 30.0]), half_life_days=np.array([30.0, 30.0, 90.0]),
                            weight=0.5)  # fmt: skip
    assert boost.tolist() == pytest.approx([0.5, 0.25, 0.5 * 0.5 ** (1 / 3)])
    # equal model and visual scores: the new product comes first
    cands = [Ranked(1, 0.5), Ranked(2, 0.5)]
    ranked = blend(candidates=cands, logits=np.zeros(2), boost=np.array([0.0, 0.4]), visual_weight=1, exact_match=1)
    assert [r.product_id for r in ranked] == [2, 1]


@pytest.mark.django_db
def test_category_half_life_is_a_quarter_of_the_median_age_clamped():
    classics, fresh = CategoryFactory(), CategoryFactory()
    for days in (400, 400, 400):
        p = ProductFactory(category=classics)
        type(p).objects.filter(pk=p.pk).update(created_at=timezone.now() - dt.timedelta(days=days))
    ProductFactory(category=fresh)
    half = live.category_half_lives()
    assert half[classics.pk] == pytest.approx(90.0) and half[fresh.pk] == pytest.approx(7.0)


@pytest.mark.django_db
def test_no_live_ranker_means_visual_order():
    cands = [Ranked(1, 0.5), Ranked(2, 0.9)]
    out = ranker_rerank(cands, CTX)
    assert out.ranked == cands and out.version == ""


@pytest.mark.django_db
def test_rerank_uses_the_live_model_and_reloads_when_it_changes(
    synthetic_logs, django_assert_max_num_queries, settings
):
    products = synthetic_logs  # price rises with the index: the model prefers cheap ones
    lr = ranker_train(kind="lr", activate="never")
    gbdt = ranker_train(kind="gbdt_lr", activate="never")
    ranker_make_live(ranker=lr)
    cands = [Ranked(products[11].pk, 0.80), Ranked(products[5].pk, 0.79), Ranked(products[0].pk, 0.78)]
    out = ranker_rerank(cands, CTX)
    assert out.version == lr.version and out.ranked[0].product_id == products[0].pk
    assert all(r.rank_score is not None for r in out.ranked)
    ranker_make_live(ranker=gbdt)
    with django_assert_max_num_queries(6):  # live check + model load + stats snapshot (3) + products + (no shopper)
        assert ranker_rerank(cands, CTX).version == gbdt.version
    settings.RANKER_STATS_SECONDS = 60
    with django_assert_max_num_queries(2):  # warm: live check (every search in tests), no shopper
        ranker_rerank(cands, CTX)
    ranker_back_to_visual_order()
    assert ranker_rerank(cands, CTX).version == ""


@pytest.mark.django_db
def test_a_broken_model_falls_back_to_visual_order(synthetic_logs, monkeypatch):
    ranker_make_live(ranker=ranker_train(kind="lr", activate="never"))
    monkeypatch.setattr(live, "feature_matrix", lambda **kw: 1 / 0)
    cands = [Ranked(synthetic_logs[11].pk, 0.8), Ranked(synthetic_logs[0].pk, 0.7)]
    assert ranker_rerank(cands, CTX).ranked == cands


@pytest.mark.django_db
def test_a_warm_rerank_of_50_candidates_reads_the_database_once(
    synthetic_logs, settings, django_assert_max_num_queries
):
    # What keeps reranking at 1-2 ms (benchmarks/ranking_bench.py measures it): the model,
    # product facts and statistics are cached; per search only the shopper's clicks are read.
    settings.RANKER_RELOAD_SECONDS = 60
    settings.RANKER_STATS_SECONDS = 60
    ranker_make_live(ranker=ranker_train(kind="gbdt_lr", activate="never"))
    more = [ProductFactory(price=Decimal("3.00")) for _ in range(38)]
    cands = [Ranked(p.pk, 0.9 - i * 0.01) for i, p in enumerate(synthetic_logs + more)]
    ctx = RerankContext(label="bottle", user_id=None, session_key="s1", k=12)
    ranker_rerank(cands, ctx)
    with django_assert_max_num_queries(1):
        ranking = ranker_rerank(cands, ctx)
    assert ranking.version and sorted(c.product_id for c in ranking.ranked) == sorted(c.product_id for c in cands)


@pytest.mark.django_db(transaction=True)
def test_photo_search_logs_the_live_ranker_and_its_scores(pixel_engine, synthetic_logs):
    for i, p in enumerate(synthetic_logs[:4]):
        product_image_add(product=p, source=photo(i))
    query = photo(2)
    outcome = photo_search(image=query, k=3, filters=SearchFilters(), channel="web", session_key="x")
    assert outcome.query.ranker_version == "" and all(it.rank_score is None for it in outcome.items)
    ranker = ranker_train(kind="gbdt_lr", activate="always")
    pixel_engine.RANKER_EXACT_MATCH_SCORE = 0.999
    outcome = photo_search(image=query, k=3, filters=SearchFilters(), channel="web", session_key="x")
    q = SearchQuery.objects.get(pk=outcome.query.pk)
    assert q.ranker_version == ranker.version and "ranker" in q.timings_ms
    assert all(r is not None for r in q.impressions.values_list("rank_score", flat=True))
    # the photographed product (its own image: visual score ~1) keeps the first place
    assert outcome.items[0].product == synthetic_logs[2]
    assert RankerVersion.objects.filter(is_live=True).count() == 1

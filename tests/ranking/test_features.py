"""Features: the label rule, leakage, affinity, bulk reads."""

import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from ranking.features import (
    DEFAULT_CTR,
    FEATURES,
    category_tokens_from_rows,
    label_tokens,
    logged_queries,
    training_set,
)
from tests.factories import CategoryFactory, ProductFactory
from tests.ranking.conftest import log_search

pytestmark = pytest.mark.django_db
F = {name: i for i, name in enumerate(FEATURES)}


def test_label_matches_category_or_ancestor_by_words_and_synonyms():
    cats = category_tokens_from_rows(
        [(1, None, "Fruit", "fruit"), (2, 1, "Apple", "apple"), (3, None, "Packages", "packages"),
         (4, 3, "Juice", "juice"), (5, None, "Vegetables", "vegetables"), (6, 5, "Tomatoes", "tomato")]
    )  # fmt: skip
    assert label_tokens("apple") & cats[2]
    assert label_tokens("orange") & cats[1]  # synonym: an orange is fruit
    assert not label_tokens("orange") & cats[4]
    assert label_tokens("bottle") & cats[4]  # via the ancestor "packages" and the synonym "juice"
    assert label_tokens("broccoli") & cats[6]  # vegetable(s) of the ancestor, singularised
    assert label_tokens("image") == frozenset() and label_tokens("user") == frozenset()


def test_training_features_use_only_events_before_the_search():
    fruit = CategoryFactory(name="Fruit", slug="fruit")
    a, b = ProductFactory(category=fruit, price=Decimal("2.00")), ProductFactory(price=Decimal("8.00"))
    t0 = timezone.now() - dt.timedelta(days=1)
    log_search(at=t0, products=[a, b], scores=[0.9, 0.8], clicked=[a], session_key="s1", label="apple")
    # the click of the first search comes 5 s later: before the second search, not before the first
    log_search(at=t0 + dt.timedelta(minutes=1), products=[b, a], scores=[0.9, 0.8], session_key="s1")
    # a click that happens after the third search started must not be seen by it
    log_search(at=t0 + dt.timedelta(minutes=2), products=[a], scores=[0.7], clicked=[a], session_key="s2",
               click_delay_s=3600)  # fmt: skip
    log_search(at=t0 + dt.timedelta(minutes=3), products=[a], scores=[0.7], session_key="s3")
    ts = training_set(logged_queries())
    rows = {(int(q), i): r for i, (q, r) in enumerate(zip(ts.query_index, ts.X))}
    first_a = ts.X[0]
    assert ts.y.tolist() == [1, 0, 0, 0, 1, 0]
    # its own click is not in its features: no history, the prior CTR, no shopper clicks
    assert first_a[F["log_impressions"]] == 0 and first_a[F["ctr_smoothed"]] == pytest.approx(DEFAULT_CTR)
    assert first_a[F["shopper_log_clicks"]] == 0
    assert first_a[F["label_informative"]] == 1 and first_a[F["label_match"]] == 1
    # second search: a was shown once and clicked once, and this session clicked a (fruit, 2.00)
    second_a = ts.X[3]
    assert second_a[F["log_impressions"]] > 0 and second_a[F["ctr_smoothed"]] > DEFAULT_CTR
    assert second_a[F["shopper_category"]] == 1 and second_a[F["shopper_merchant"]] == 1
    assert second_a[F["shopper_price"]] == pytest.approx(1.0)
    assert ts.X[2][F["shopper_category"]] == 0  # b is not fruit
    # the fourth search sees three impressions of a and only the one click that had happened
    fourth = ts.X[5]
    assert fourth[F["ctr_smoothed"]] == pytest.approx((1 + 20 * DEFAULT_CTR) / (3 + 20))
    assert fourth[F["shopper_log_clicks"]] == 0  # another session
    assert len(rows) == 6


def test_price_relative_to_the_result_set_and_visual_rank():
    ps = [ProductFactory(price=Decimal(p)) for p in ("1.00", "3.00", "9.00")]
    log_search(at=timezone.now(), products=ps, scores=[0.9, 0.5, 0.4])
    X = training_set(logged_queries()).X
    assert X[:, F["price_vs_median"]].tolist() == pytest.approx([-0.693147, 0.0, 0.916291], abs=1e-5)
    assert X[:, F["visual_rank_inv"]].tolist() == pytest.approx([1, 1 / 2, 1 / 3])
    assert X[:, F["visual_gap"]].tolist() == pytest.approx([0, 0.4, 0.5])


def test_logged_queries_read_in_a_few_queries(django_assert_max_num_queries):
    ps = [ProductFactory() for _ in range(3)]
    for n in range(5):
        log_search(at=timezone.now() - dt.timedelta(minutes=n), products=ps, scores=[0.9, 0.8, 0.7], clicked=ps[:1])
    with django_assert_max_num_queries(6):
        queries = logged_queries()
        training_set(queries)
    assert [q.clicked for q in queries] == [[True, False, False]] * 5

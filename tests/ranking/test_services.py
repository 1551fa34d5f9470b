"""Training from the logs: stored versions with metrics, the auto-activation rule."""

import pytest

from ranking.models import RankerVersion
from ranking.services import (
    RankerTrainingError,
    ranker_back_to_visual_order,
    ranker_load,
    ranker_make_live,
    ranker_train,
)
from tests.factories import ProductFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("kind", ["lr", "gbdt_lr"])
def test_training_stores_a_version_with_metrics(synthetic_logs, kind):
    ranker = ranker_train(kind=kind, activate="never")
    ranker.refresh_from_db()
    m = ranker.metrics
    assert ranker.kind == kind and not ranker.is_live and ranker.version.startswith(kind)
    assert m["train"]["queries"] == 192 and m["test"]["queries"] == 48  # time-based 80/20
    assert m["train"]["impressions"] == 192 * 6 and m["test"]["clicks"] > 0
    assert 0.5 < m["model"]["auc"] <= 1 and 0 < m["visual_order"]["ndcg@10"] < 1
    assert m["model"]["ndcg@10"] > m["visual_order"]["ndcg@10"]  # cheap wins; visual order is blind to it
    loaded = ranker_load(ranker.model)
    assert loaded["features"] == ranker.features and hasattr(loaded["estimator"], "predict_proba")


def test_auto_activation_needs_to_beat_visual_order_and_the_live_version(synthetic_logs):
    first = ranker_train(kind="gbdt_lr", activate="auto")
    assert first.metrics["auto_live"]["eligible"] and RankerVersion.objects.get(is_live=True) == first
    # the same model again does not beat the live one (re-scored on the same split): stays off
    again = ranker_train(kind="gbdt_lr", activate="auto")
    assert again.metrics["live"]["version"] == first.version
    assert not again.metrics["auto_live"]["eligible"] and "live" in again.metrics["auto_live"]["reason"]
    assert RankerVersion.objects.get(is_live=True) == first


def test_make_live_keeps_one_and_back_to_visual_order(synthetic_logs):
    a = ranker_train(kind="lr", activate="never")
    b = ranker_train(kind="gbdt_lr", activate="never")
    ranker_make_live(ranker=a)
    ranker_make_live(ranker=b)
    assert list(RankerVersion.objects.filter(is_live=True)) == [b]
    assert ranker_back_to_visual_order() == 1 and not RankerVersion.objects.filter(is_live=True).exists()


def test_too_few_logs_is_a_domain_error():
    from django.utils import timezone

    from tests.ranking.conftest import log_search

    ps = [ProductFactory(), ProductFactory()]
    for _ in range(3):
        log_search(at=timezone.now(), products=ps, scores=[0.9, 0.1], clicked=ps[:1])
    with pytest.raises(RankerTrainingError):
        ranker_train(kind="lr")
    assert not RankerVersion.objects.exists()

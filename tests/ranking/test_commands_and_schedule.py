"""train_ranker, the weekly beat entry and its queue, the admin actions."""

from io import StringIO

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.urls import reverse

from ranking.models import RankerVersion
from ranking.tasks import ranker_train_task
from tests.factories import UserFactory


@pytest.mark.django_db
def test_train_ranker_both_kinds_with_activate(synthetic_logs):
    out = StringIO()
    call_command("train_ranker", kind="both", activate=True, stdout=out)
    assert RankerVersion.objects.count() == 2
    live = RankerVersion.objects.get(is_live=True)
    assert live.kind == "gbdt_lr" and f"live: {live.version}" in out.getvalue()
    assert "NDCG@10" in out.getvalue()


@pytest.mark.django_db
def test_train_ranker_no_activate_and_thin_logs():
    with pytest.raises(CommandError, match="nothing to train"):
        call_command("train_ranker", kind="lr", stdout=StringIO())


@pytest.mark.django_db
def test_weekly_task_trains_and_goes_live_only_if_it_wins(synthetic_logs):
    version = ranker_train_task.delay().get()
    ranker = RankerVersion.objects.get(version=version)
    assert ranker.kind == "gbdt_lr" and ranker.is_live == ranker.metrics["auto_live"]["eligible"]


@pytest.mark.django_db
def test_weekly_task_skips_without_logs():
    assert ranker_train_task.delay().get() is None


def test_beat_schedule_and_queue():
    from celery.schedules import crontab

    entry = settings.CELERY_BEAT_SCHEDULE["ranker-train"]
    assert entry["task"] == "ranking.tasks.ranker_train_task" == ranker_train_task.name
    assert isinstance(entry["schedule"], crontab) and entry["schedule"].day_of_week == {1}
    from visualshop.celery import app

    assert app.amqp.router.route({}, ranker_train_task.name)["queue"].name == "train"
    assert ranker_train_task.acks_late is False


@pytest.mark.django_db
def test_admin_make_live_and_back_to_visual_order(client, synthetic_logs):
    call_command("train_ranker", kind="both", no_activate=True, stdout=StringIO())
    lr = RankerVersion.objects.get(kind="lr")
    url = reverse("admin:ranking_rankerversion_changelist")
    shopper = UserFactory(is_staff=False)
    client.force_login(shopper)
    client.post(url, {"action": "make_live", "_selected_action": [lr.pk]})
    assert not RankerVersion.objects.filter(is_live=True).exists()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    page = client.get(url)
    assert page.status_code == 200 and b"NDCG@10" in page.content and lr.version.encode() in page.content
    client.post(url, {"action": "make_live", "_selected_action": [lr.pk]})
    assert RankerVersion.objects.get(is_live=True) == lr
    client.post(url, {"action": "back_to_visual_order", "_selected_action": [lr.pk]})
    assert not RankerVersion.objects.filter(is_live=True).exists()

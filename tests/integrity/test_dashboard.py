"""The staff dashboard: renders with data for platform staff, refuses others, survives a dead broker."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from search.dashboard import queue_depths, search_activity, svg_chart
from search.models import Click, EmbedderVersion, Impression, SearchQuery
from tests.factories import ProductFactory, ProductImageFactory, UserFactory

pytestmark = pytest.mark.django_db
URL = "/admin/dashboard/"


@pytest.fixture
def platform_staff():
    return UserFactory(is_staff=True, is_superuser=True)


def _query(when, product, clicked: bool):
    q = SearchQuery.objects.create(channel="web", width=10, height=10, k=5, embedder_version="v1", index_generation=1)
    SearchQuery.objects.filter(pk=q.pk).update(created_at=when)
    imp = Impression.objects.create(query=q, product=product, position=1, score=0.9)
    if clicked:
        Click.objects.create(impression=imp)
    return q


@pytest.fixture
def activity():
    product = ProductFactory()
    now = timezone.now()
    # yesterday: 4 searches, 1 clicked; today: 2 searches, both clicked
    for i in range(4):
        _query(now - timedelta(days=1), product, clicked=i == 0)
    for _ in range(2):
        _query(now, product, clicked=True)
    EmbedderVersion.objects.create(
        version="mobilenet_v2-abc", name="mobilenet_v2", dim=4, is_active=True, metrics={"held_out": {"recall@1": 0.61}}
    )


def test_daily_search_volume_and_ctr_are_bucketed_by_day(activity):
    days = search_activity(days=3)
    assert [d["searches"] for d in days] == [0, 4, 2]
    assert days[1]["ctr"] == pytest.approx(0.25) and days[2]["ctr"] == pytest.approx(1.0)
    assert days[0]["ctr"] is None  # no results shown: no rate, not zero


def test_dashboard_renders_every_section_for_platform_staff(client, platform_staff, activity, settings):
    settings.CELERY_BROKER_URL = "memory://"
    ProductImageFactory()  # a dirty image: lag 1
    client.force_login(platform_staff)
    page = client.get(URL)
    assert page.status_code == 200
    html = page.content.decode()
    for section in ("Search index", "Embedder versions", "Ranker versions", "Task queues", "Review-photo cleaning",
                    "Copied images", "Searches and clicks"):  # fmt: skip
        assert section in html
    assert "mobilenet_v2-abc" in html and "held_out.recall@1=0.61" in html
    assert html.count('class="dash-chart"') == 2 and "<polyline" in html
    assert "Queue depth unavailable: the broker is not Redis" in html
    assert reverse("admin:catalog_reviewimage_spot_check") in html
    assert "copy_status__exact=flagged" in html
    assert page.context["index"][0]["not_embedded"] == 1
    assert page.context["totals"] == {"searches": 6, "impressions": 6, "clicks": 3}


def test_admin_index_links_to_the_dashboard_for_platform_staff(client, platform_staff):
    client.force_login(platform_staff)
    assert URL in client.get("/admin/").content.decode()


def test_merchant_staff_are_refused_and_anonymous_users_sent_to_log_in(client):
    merchant_staff = UserFactory(is_staff=True)
    merchant_staff.user_permissions.set(Permission.objects.filter(content_type__app_label="catalog"))
    client.force_login(merchant_staff)
    assert client.get(URL).status_code == 403
    assert URL not in client.get("/admin/").content.decode()
    client.logout()
    page = client.get(URL)
    assert page.status_code == 302 and "/admin/login/" in page["Location"]


def test_a_dead_redis_broker_shows_unavailable_not_an_error(client, platform_staff, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    assert queue_depths(timeout=0.3)["available"] is False
    client.force_login(platform_staff)
    page = client.get(URL)
    assert page.status_code == 200 and "Queue depth unavailable: the broker did not answer" in page.content.decode()


def test_the_act_buttons_enqueue_and_report_a_dead_broker(client, platform_staff, monkeypatch):
    from search import tasks

    def refuse():
        raise ConnectionError("broker down")

    monkeypatch.setattr(tasks.index_sync_task, "delay", refuse)
    client.force_login(platform_staff)
    page = client.post(reverse("staff_dashboard_act"), {"action": "index_sync"}, follow=True)
    assert page.status_code == 200 and "Could not enqueue index_sync" in page.content.decode()


def test_charts_escape_nothing_but_numbers_and_labels():
    svg = svg_chart([1, None, 3], ["a<b", "c", "d"], kind="line", title="t")
    assert "a&lt;b" in svg and "<polyline" in svg


def test_ranker_versions_and_their_metrics_are_listed(client, platform_staff):
    from django.apps import apps

    try:
        ranker = apps.get_model("ranking", "RankerVersion")
    except LookupError:
        pytest.skip("the ranking app has no RankerVersion")
    ranker.objects.create(version="lr-001", kind="lr", model=b"", metrics={"auc": 0.7123}, is_live=True)
    client.force_login(platform_staff)
    html = client.get(URL).content.decode()
    assert "lr-001" in html and "(live)" in html and "auc=0.7123" in html


@pytest.mark.services
def test_queue_depth_counts_waiting_messages_on_redis(settings, redis_url):
    from kombu import Connection

    settings.CELERY_BROKER_URL = redis_url
    with Connection(redis_url) as conn:
        queue = conn.SimpleQueue("embed")
        for i in range(3):
            queue.put({"n": i})
        queue.close()
    depths = queue_depths()
    assert depths["available"] is True
    assert depths["queues"]["embed"] == 3 and depths["queues"]["train"] == 0

import io
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from catalog.services import product_image_add
from search.models import Click, Impression, SearchQuery
from tests.factories import CategoryFactory, MerchantFactory, ProductFactory
from tests.search.test_ingestion import photo
from tests.vision.test_imageio import png_bomb

pytestmark = pytest.mark.django_db(transaction=True)
URL = "/api/v1/search/"


@pytest.fixture
def shop(pixel_engine):
    """Products 0..3 whose images are random pictures; 2 and 3 belong to another merchant."""
    fruit, veg = CategoryFactory(slug="fruit"), CategoryFactory(slug="veg")
    other = MerchantFactory(name="Other", slug="other")
    products = [
        ProductFactory(sku="P0", category=fruit, price="1.00", stock=3),
        ProductFactory(sku="P1", category=fruit, price="5.00", stock=0),
        ProductFactory(sku="P2", category=veg, price="2.00", merchant=other),
        ProductFactory(sku="P3", category=veg, price="9.00", merchant=other),
    ]
    for i, p in enumerate(products):
        product_image_add(product=p, source=photo(i))
    return products


def upload(data: bytes, name: str = "q.png") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="image/png")


def test_search_returns_boxes_and_results_and_logs_them(client, shop):
    response = client.post(URL, {"image": upload(photo(90, noise=20, base_seed=2)), "k": 3})
    assert response.status_code == 200, response.content
    body = response.json()
    assert [r["sku"] for r in body["results"]][0] == "P2"
    assert [r["position"] for r in body["results"]] == [1, 2, 3]
    first = body["results"][0]
    assert (
        first["merchant"] == "Other"
        and first["currency"] == "EUR"
        and first["url"].endswith(f"/products/{first['product_id']}/")
    )
    assert first["image_url"].startswith("http://testserver/media/")
    assert sum(b["chosen"] for b in body["boxes"]) == 1 and body["box"]["chosen"]
    assert body["image"] == {"width": 128, "height": 128}
    # the log: the query, its photo (no EXIF), its impressions
    query = SearchQuery.objects.get(pk=body["query_id"])
    assert query.channel == "web" and query.session_key and query.k == 3
    assert query.photo and query.embedder_version == body["embedder_version"]
    assert set(query.timings_ms) >= {"decode", "detect", "embed", "search"}
    assert list(query.impressions.values_list("product__sku", "position")) == [
        (r["sku"], r["position"]) for r in body["results"]
    ]


def test_query_photo_is_stored_without_exif_or_gps(client, shop):
    from PIL import Image

    img = Image.open(io.BytesIO(photo(1))).convert("RGB")
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif[0x8825] = {1: "N", 2: (59.0, 19.0, 0.0)}  # GPS IFD
    out = io.BytesIO()
    img.save(out, "JPEG", exif=exif)
    body = client.post(URL, {"image": upload(out.getvalue(), "q.jpg")}).json()
    stored = SearchQuery.objects.get(pk=body["query_id"]).photo
    with stored.open("rb") as fh:
        assert not Image.open(fh).getexif()


def test_caller_box_overrides_the_choice(client, shop):
    body = client.post(URL, {"image": upload(photo(1)), "box": "0,0,64,64"}).json()
    assert body["box"]["label"] == "user" and body["box"]["x2"] == 64
    assert SearchQuery.objects.get(pk=body["query_id"]).box_from_user


@pytest.mark.parametrize(
    "params,skus",
    [
        ({"category": "fruit"}, {"P0", "P1"}),
        ({"merchant": "other"}, {"P2", "P3"}),
        ({"min_price": "1.50", "max_price": "5"}, {"P1", "P2"}),
        ({"in_stock": "true"}, {"P0", "P2", "P3"}),
    ],
)
def test_filters(client, shop, params, skus):
    if "category" in params:
        params = {**params, "category": str(shop[0].category_id)}
    body = client.post(URL, {"image": upload(photo(0)), "k": 10, **params}).json()
    assert {r["sku"] for r in body["results"]} == skus


def test_inactive_products_are_never_returned(client, shop):
    shop[0].is_active = False
    shop[0].save()
    body = client.post(URL, {"image": upload(photo(0))}).json()
    assert "P0" not in {r["sku"] for r in body["results"]}


def _truncated_jpeg() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.open(io.BytesIO(photo(3))).convert("RGB").resize((400, 400)).save(out, "JPEG")
    return out.getvalue()[:3000]


@pytest.mark.parametrize(
    "params,field",
    [
        ({"image": upload(b"just some text", "q.txt")}, "image"),
        ({"image": upload(_truncated_jpeg(), "q.jpg")}, "image"),
        ({"image": upload(b"", "q.jpg")}, "image"),
        ({"image": upload(b"\xff\xd8" + b"\0" * (50 * 1024 * 1024), "big.jpg")}, "image"),
        ({"image": upload(png_bomb(30000, 30000), "bomb.png")}, "image"),
        ({}, "image"),
        ({"box": "10,10,5,50"}, "box"),
        ({"box": "0,0,5000,5000"}, "box"),
        ({"box": "1,2,3"}, "box"),
        ({"box": "a,b,c,d"}, "box"),
        ({"k": "0"}, "k"),
        ({"k": str(10**6)}, "k"),
        ({"colour": "red"}, "colour"),
        ({"min_price": "5", "max_price": "1"}, "max_price"),
        ({"category": "999999"}, "category"),
    ],
)
def test_bad_input_is_a_clear_400_and_writes_nothing(client, shop, params, field):
    data = {"image": upload(photo(0)), **params}
    if params == {}:
        data.pop("image")
    response = client.post(URL, data)
    assert response.status_code == 400, response.content[:500]
    error = response.json()["error"]
    assert error["code"] == "invalid" and field in error["fields"] and error["message"]
    assert not SearchQuery.objects.exists() and not Impression.objects.exists()


def test_anonymous_search_is_throttled(client, shop, settings):
    from django.core.cache import cache
    from rest_framework.settings import api_settings

    cache.clear()
    rates = {**api_settings.DEFAULT_THROTTLE_RATES, "search_anon": "2/min"}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    from search.apis import SearchAnonThrottle

    SearchAnonThrottle.THROTTLE_RATES = rates
    try:
        codes = [client.post(URL, {"image": upload(photo(0))}).status_code for _ in range(3)]
    finally:
        SearchAnonThrottle.THROTTLE_RATES = api_settings.DEFAULT_THROTTLE_RATES
        cache.clear()
    assert codes == [200, 200, 429]


def test_clicks_are_recorded_once_and_only_for_what_was_shown(client, shop):
    body = client.post(URL, {"image": upload(photo(0)), "k": 2}).json()
    shown = body["results"][0]["product_id"]
    click = {"query_id": body["query_id"], "product_id": shown, "kind": "click"}
    assert client.post("/api/v1/clicks/", click, content_type="application/json").status_code == 201
    assert client.post("/api/v1/clicks/", click, content_type="application/json").status_code == 200
    cart = {**click, "kind": "add_to_cart"}
    assert client.post("/api/v1/clicks/", cart, content_type="application/json").status_code == 201
    assert Click.objects.count() == 2
    not_shown = next(p.pk for p in shop if p.pk not in {r["product_id"] for r in body["results"]})
    assert (
        client.post("/api/v1/clicks/", {**click, "product_id": not_shown}, content_type="application/json").status_code
        == 404
    )


def test_another_session_cannot_click_for_you(client, shop):
    from django.test import Client

    body = client.post(URL, {"image": upload(photo(0))}).json()
    click = {"query_id": body["query_id"], "product_id": body["results"][0]["product_id"]}
    assert Client().post("/api/v1/clicks/", click, content_type="application/json").status_code == 404
    assert not Click.objects.exists()


def test_the_schema_and_docs_are_served(client):
    assert client.get("/api/v1/schema/").status_code == 200
    assert client.get(reverse("api:docs")).status_code == 200


def test_query_photos_are_deleted_after_the_retention_period(client, shop, settings):
    from datetime import timedelta

    from django.utils import timezone

    from search.tasks import query_photos_purge_task

    old = client.post(URL, {"image": upload(photo(0))}).json()["query_id"]
    new = client.post(URL, {"image": upload(photo(1))}).json()["query_id"]
    SearchQuery.objects.filter(pk=old).update(
        created_at=timezone.now() - timedelta(days=settings.SEARCH_PHOTO_RETENTION_DAYS + 1)
    )
    path = SearchQuery.objects.get(pk=old).photo.path
    assert query_photos_purge_task.apply().get() == 1
    old_q, new_q = SearchQuery.objects.get(pk=old), SearchQuery.objects.get(pk=new)
    assert not old_q.photo and new_q.photo and not Path(path).exists()
    assert old_q.impressions.exists()  # the statistics stay


@pytest.mark.weights
def test_the_2_core_setting_searches_with_the_ssd_detector(client, shop, settings):
    # Given the detector that README's Production section sets on 2-core web servers
    settings.SEARCH_DETECTOR = "ssd_oidv4"
    carton = Path(__file__).resolve().parents[3] / "shared/datasets/grocery-store/catalog/Bravo-Apple-Juice"
    # When a shopper searches with a photo of a juice carton
    response = client.post(URL, {"image": upload((carton / "Bravo-Apple-Juice_Iconic.jpg").read_bytes(), "q.jpg")})
    # Then SSD's box around the carton is offered and logged, and products come back
    body = response.json()
    assert response.status_code == 200, body
    assert [b["label"] for b in body["boxes"]][:1] == ["bottle"]
    assert SearchQuery.objects.get(pk=body["query_id"]).boxes[0]["label"] == "bottle"
    assert len(body["results"]) == len(shop)


def test_expired_sessions_are_deleted_and_live_ones_kept(shop):
    from datetime import timedelta

    from django.contrib.sessions.models import Session
    from django.test import Client
    from django.utils import timezone

    from search.tasks import sessions_clear_task

    # Given two cookie-less searches, each of which starts a session
    for i in range(2):
        assert Client().post(URL, {"image": upload(photo(i))}).status_code == 200
    expired, live = Session.objects.order_by("pk")
    Session.objects.filter(pk=expired.pk).update(expire_date=timezone.now() - timedelta(seconds=1))
    # When the daily cleanup runs
    sessions_clear_task.apply().get()
    # Then only the expired one is gone
    assert list(Session.objects.values_list("pk", flat=True)) == [live.pk]


def test_anonymous_searches_are_not_counted_under_the_user_rate(shop, rf):
    from django.contrib.auth.models import AnonymousUser

    from search.apis import SearchUserThrottle

    request = rf.post(URL)
    request.user = AnonymousUser()
    assert SearchUserThrottle().get_cache_key(request, None) is None


def test_staff_see_searches_with_what_was_shown_and_clicked(client, admin_client, shop):
    body = client.post(URL, {"image": upload(photo(0)), "k": 2}).json()
    click = {"query_id": body["query_id"], "product_id": body["results"][0]["product_id"]}
    client.post("/api/v1/clicks/", click, content_type="application/json")
    page = admin_client.get(reverse("admin:search_searchquery_change", args=[body["query_id"]]))
    assert page.status_code == 200 and body["results"][0]["sku"].encode() in page.content
    assert admin_client.get(reverse("admin:search_searchquery_changelist")).status_code == 200

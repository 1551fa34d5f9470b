import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from rest_framework.test import APIClient

from catalog.models import Product
from tests.factories import CategoryFactory, MerchantFactory, ProductFactory, ProductImageFactory, image_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def partner(capsys):
    shop = MerchantFactory(name="Corner Shop", slug="corner-shop")
    call_command("create_partner_token", "--merchant", "Corner Shop")
    token = capsys.readouterr().out.strip()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return shop, api


def test_product_listing_filters_and_pages(client):
    fruit = CategoryFactory()
    for i in range(30):
        ProductFactory(title=f"Apple {i:02d}", category=fruit, price="2.00")
    ProductFactory(title="Hidden", is_active=False)
    ProductFactory(title="Pricey", price="99.00")
    body = client.get("/api/v1/products/", {"category": fruit.pk}).json()
    assert body["count"] == 30 and len(body["results"]) == 24 and body["next"]
    assert client.get("/api/v1/products/", {"min_price": "50"}).json()["results"][0]["title"] == "Pricey"
    assert client.get("/api/v1/products/", {"q": "hidden"}).json()["count"] == 0
    assert client.get("/api/v1/products/", {"min_price": "-1"}).status_code == 400


def test_product_detail(client):
    product = ProductImageFactory().product
    body = client.get(f"/api/v1/products/{product.pk}/").json()
    assert body["sku"] == product.sku and body["images"][0]["url"].startswith("http://testserver/media/")
    assert client.get("/api/v1/products/999999/").json()["error"]["code"] == "not_found"


def test_partner_creates_updates_deactivates_and_adds_images(partner):
    shop, api = partner
    created = api.post("/api/v1/partner/products/", {"sku": "MUG-1", "title": "Mug", "price": "7.50"}, format="json")
    assert created.status_code == 201 and created.json()["merchant"] == "corner-shop"
    again = api.post("/api/v1/partner/products/", {"sku": "MUG-1", "title": "Mug", "price": "7.50"}, format="json")
    assert again.status_code == 400 and "sku" in again.json()["error"]["fields"]
    patched = api.patch("/api/v1/partner/products/MUG-1/", {"price": "6.00", "stock": 4}, format="json")
    assert patched.json()["price"] == "6.00" and patched.json()["stock"] == 4
    image = SimpleUploadedFile("mug.jpg", image_bytes(seed=8), content_type="image/jpeg")
    added = api.post("/api/v1/partner/products/MUG-1/images/", {"image": image}, format="multipart")
    assert added.status_code == 201 and added.json()["width"] == 64
    bad = SimpleUploadedFile("mug.jpg", b"nope", content_type="image/jpeg")
    refused = api.post("/api/v1/partner/products/MUG-1/images/", {"image": bad}, format="multipart")
    assert refused.status_code == 400 and "image" in refused.json()["error"]["fields"]
    gone = api.delete("/api/v1/partner/products/MUG-1/")
    assert gone.status_code == 200 and gone.json()["is_active"] is False
    assert Product.objects.get(sku="MUG-1").images.count() == 1


def test_partner_cannot_touch_another_merchants_product(partner):
    _, api = partner
    ProductFactory(sku="THEIRS", merchant=MerchantFactory(name="Rival"))
    assert api.patch("/api/v1/partner/products/THEIRS/", {"price": "0.01"}, format="json").status_code == 404
    assert api.delete("/api/v1/partner/products/THEIRS/").status_code == 404
    assert Product.objects.get(sku="THEIRS").is_active
    listing = api.get("/api/v1/partner/products/").json()
    assert listing["count"] == 0


def test_partner_api_needs_a_token():
    response = APIClient().get("/api/v1/partner/products/")
    assert response.status_code == 401 and response.json()["error"]["code"] == "not_authenticated"

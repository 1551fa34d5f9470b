import pytest
from django.urls import reverse

from tests.factories import ProductFactory, ProductImageFactory

pytestmark = pytest.mark.django_db


def test_storefront_lists_active_products_only(client):
    ProductImageFactory(product=ProductFactory(title="Oat milk"))
    ProductFactory(title="Discontinued soda", is_active=False)
    page = client.get(reverse("catalog:product_list"))
    assert page.status_code == 200
    assert b"Oat milk" in page.content and b"Discontinued soda" not in page.content


def test_storefront_text_search_and_category_filter(client):
    milk = ProductFactory(title="Oat milk")
    ProductFactory(title="Apple")
    page = client.get(reverse("catalog:product_list"), {"q": "oat"})
    assert b"Oat milk" in page.content and b"Apple" not in page.content
    page = client.get(reverse("catalog:product_list"), {"category": milk.category.slug})
    assert b"Oat milk" in page.content and b"Apple" not in page.content


def test_product_page(client):
    product = ProductImageFactory(product=ProductFactory(title="Oat milk", is_active=True)).product
    page = client.get(reverse("catalog:product_detail", args=[product.pk]))
    assert (
        page.status_code == 200
        and b"Oat milk" in page.content
        and product.images.first().file.url.encode() in page.content
    )
    product.is_active = False
    product.save()
    assert client.get(reverse("catalog:product_detail", args=[product.pk])).status_code == 404

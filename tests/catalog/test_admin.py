import pytest
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from catalog.models import ProductImage
from tests.factories import MerchantFactory, ProductFactory, ProductImageFactory, UserFactory, image_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def shop():
    """Two merchants with a product each, and a staff user of the first."""
    mine, theirs = MerchantFactory(name="Mine"), MerchantFactory(name="Theirs")
    staff = UserFactory(is_staff=True)
    staff.user_permissions.set(Permission.objects.filter(content_type__app_label="catalog"))
    mine.staff.add(staff)
    return {
        "staff": staff,
        "mine": ProductImageFactory(product=ProductFactory(merchant=mine, title="My mug")).product,
        "theirs": ProductImageFactory(product=ProductFactory(merchant=theirs, title="Their cup")).product,
    }


def test_merchant_staff_see_only_their_products(client, shop):
    client.force_login(shop["staff"])
    page = client.get(reverse("admin:catalog_product_changelist"))
    assert page.status_code == 200
    assert b"My mug" in page.content and b"Their cup" not in page.content
    other = client.get(reverse("admin:catalog_product_change", args=[shop["theirs"].pk]))
    assert other.status_code == 302  # "doesn't exist" redirect: not visible to them


def test_merchant_staff_cannot_move_a_product_to_another_merchant(client, shop):
    client.force_login(shop["staff"])
    page = client.get(reverse("admin:catalog_product_change", args=[shop["mine"].pk]))
    assert b"Theirs" not in page.content  # the merchant choices are only their own


def test_superuser_sees_everything(admin_client, shop):
    page = admin_client.get(reverse("admin:catalog_product_changelist"))
    assert b"My mug" in page.content and b"Their cup" in page.content


def test_changelist_query_count_does_not_grow_with_products(admin_client, shop, django_assert_max_num_queries):
    for _ in range(10):
        ProductImageFactory(product=ProductFactory(merchant=shop["mine"].merchant))
    with django_assert_max_num_queries(12):
        admin_client.get(reverse("admin:catalog_product_changelist"))


def test_admin_upload_of_a_non_image_shows_a_clear_error(admin_client, shop):
    url = reverse("admin:catalog_productimage_add")
    bad = SimpleUploadedFile("evil.jpg", b"<?php echo 1; ?>", content_type="image/jpeg")
    page = admin_client.post(url, {"product": shop["mine"].pk, "position": 1, "file": bad})
    assert page.status_code == 200
    assert b"not a valid image" in page.content or b"not an image" in page.content
    assert ProductImage.objects.filter(product=shop["mine"]).count() == 1


def test_admin_upload_of_a_real_image_fills_the_fingerprints(admin_client, shop):
    url = reverse("admin:catalog_productimage_add")
    good = SimpleUploadedFile("side.jpg", image_bytes(size=(90, 70), seed=77), content_type="image/jpeg")
    page = admin_client.post(url, {"product": shop["mine"].pk, "position": 1, "file": good})
    assert page.status_code == 302, page.content[:2000]
    image = ProductImage.objects.get(product=shop["mine"], position=1)
    assert (image.width, image.height) == (90, 70) and len(image.phash) == 16

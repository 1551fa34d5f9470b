import io
from decimal import Decimal
from pathlib import Path

import pytest
from PIL import Image

from catalog.images import ImageError
from catalog.models import Category, ProductImage
from catalog.services import (
    category_get_or_create_path,
    image_refresh_fingerprint,
    product_image_add,
    product_upsert,
    review_image_add,
    review_image_label,
)
from tests.factories import MerchantFactory, ProductFactory, UserFactory, image_bytes

pytestmark = pytest.mark.django_db


def test_category_path_builds_a_tree_once():
    apple = category_get_or_create_path(path="Fruit/Apple")
    again = category_get_or_create_path(path="Fruit / Apple")
    assert apple == again
    assert apple.path == "Fruit / Apple"
    assert Category.objects.count() == 2


def test_product_upsert_reports_what_happened():
    merchant = MerchantFactory()
    product, outcome = product_upsert(merchant=merchant, sku="A1", title="Apple", price=Decimal("1.50"))
    assert outcome == "created"
    updated_at = product.updated_at
    _, outcome = product_upsert(merchant=merchant, sku="A1", title="Apple")
    assert outcome == "unchanged"
    product.refresh_from_db()
    assert product.updated_at == updated_at and product.price == Decimal("1.50")
    product, outcome = product_upsert(merchant=merchant, sku="A1", title="Green apple")
    assert outcome == "updated" and product.title == "Green apple"


def test_same_sku_in_two_merchants_are_two_products():
    a, _ = product_upsert(merchant=MerchantFactory(), sku="X", title="x")
    b, _ = product_upsert(merchant=MerchantFactory(), sku="X", title="x")
    assert a.pk != b.pk


def test_image_add_stores_fingerprints_under_a_random_name():
    product = ProductFactory()
    image, created = product_image_add(
        product=product, source=image_bytes(size=(80, 60), seed=1), name="../../etc/passwd.jpg"
    )
    assert created
    assert (image.width, image.height) == (80, 60)
    assert len(image.sha256) == 64 and len(image.phash) == 16
    assert image.file.name.startswith("products/") and "passwd" not in image.file.name
    assert image.position == 0


def test_duplicate_upload_is_not_stored_twice():
    product = ProductFactory()
    data = image_bytes(seed=2)
    first, _ = product_image_add(product=product, source=data)
    second, created = product_image_add(product=product, source=data)
    assert not created and second.pk == first.pk
    assert ProductImage.objects.filter(product=product).count() == 1


def test_bad_image_is_refused_and_nothing_is_written(settings):
    product = ProductFactory()
    with pytest.raises(ImageError):
        product_image_add(product=product, source=b"definitely not a photo")
    assert not ProductImage.objects.exists()
    assert not [p for p in Path(settings.MEDIA_ROOT).rglob("*") if p.is_file()]


def test_rotated_photo_is_stored_upright():
    img = Image.new("RGB", (40, 20), (0, 0, 200))
    exif = Image.Exif()
    exif[0x0112] = 6
    out = io.BytesIO()
    img.save(out, format="JPEG", exif=exif)
    review, _ = review_image_add(product=ProductFactory(), source=out.getvalue())
    assert (review.width, review.height) == (20, 40)
    with review.file.open("rb") as fh:
        assert Image.open(fh).size == (20, 40)


def test_staff_label_overrides_the_automatic_status():
    review, _ = review_image_add(product=ProductFactory(), source=image_bytes(seed=3))
    staff = UserFactory(is_staff=True)
    review_image_label(review=review, label="rejected", user=staff)
    review.refresh_from_db()
    assert review.status == "rejected" and review.staff_label == "rejected"
    assert review.labeled_by == staff and review.labeled_at is not None


def test_refresh_fingerprint_repairs_a_row():
    image, _ = product_image_add(product=ProductFactory(), source=image_bytes(seed=4))
    good = image.phash
    ProductImage.objects.filter(pk=image.pk).update(phash="0" * 16, width=1)
    image.refresh_from_db()
    assert image_refresh_fingerprint(image=image) is True
    image.refresh_from_db()
    assert image.phash == good and image.width == 64
    assert image_refresh_fingerprint(image=image) is False

"""The production thresholds with the pretrained MobileNetV2 on a few shared Grocery Store photos."""

from pathlib import Path

import pytest
from PIL import Image

from catalog.models import ProductImage
from catalog.services import product_image_add
from search.live import live_index_reset
from tests.factories import MerchantFactory, ProductFactory
from tests.integrity.conftest import encode
from vision.nearcopy import TRANSFORMS

SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "grocery-store"
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.weights]
KEY = "Arla-Standard-Milk"


@pytest.fixture
def real_engine(settings, auto_index):
    if not (SHARED / "catalog" / KEY).is_dir():
        pytest.skip("the shared Grocery Store set is not here")
    settings.VISUALSHOP_EMBEDDER = "mobilenet_v2"
    settings.SEARCH_DETECTOR = "none"
    settings.REVIEW_SPOT_CHECK_FRACTION = 0.0
    live_index_reset()
    yield settings
    live_index_reset()


def test_crop_and_mirror_copies_are_caught_and_shoppers_photos_are_not(real_engine):
    studio = sorted((SHARED / "catalog" / KEY).glob("*.jpg"))[0]
    product_image_add(product=ProductFactory(merchant=MerchantFactory(name="A"), sku=KEY), source=studio.read_bytes())
    b = MerchantFactory(name="B")
    with Image.open(studio) as img:
        img = img.convert("RGB")
        copies = {
            name: product_image_add(product=ProductFactory(merchant=b), source=encode(TRANSFORMS[name](img)))[0]
            for name in ("crop_corner_75", "mirror+crop+jpeg", "crop+logo+mirror")
        }
    photos = sorted((SHARED / "reviews" / KEY).glob("*.jpg"))[:4]
    genuine = [product_image_add(product=ProductFactory(merchant=b), source=p.read_bytes())[0] for p in photos]
    status = {k: ProductImage.objects.get(pk=v.pk).copy_status for k, v in copies.items()}
    assert status == dict.fromkeys(copies, "flagged")
    assert [ProductImage.objects.get(pk=g.pk).copy_status for g in genuine] == ["none"] * len(genuine)

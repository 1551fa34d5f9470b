"""Stolen images: flagged at upload (hash) or at embedding (vector), kept out of search until staff decide."""

import json

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from PIL import ImageOps

from catalog.integrity import product_image_copy_decide
from catalog.models import Product, ProductImage
from catalog.services import product_image_add
from search.indexing import index_sync
from search.live import live_index
from tests.factories import MerchantFactory, ProductFactory, UserFactory
from tests.integrity.conftest import encode, scene
from vision.nearcopy import t_crop, t_jpeg

pytestmark = pytest.mark.django_db(transaction=True)
Status = ProductImage.CopyStatus


@pytest.fixture
def original(copy_engine):
    """Merchant A's product with its own photo, embedded and in the index."""
    product = ProductFactory(merchant=MerchantFactory(name="Shop A"), sku="A-1", price="10.00")
    image, _ = product_image_add(product=product, source=encode(scene(1)))
    return image


def add_as(merchant_name: str, data: bytes, sku: str = "B-1") -> ProductImage:
    merchant = MerchantFactory(name=merchant_name)
    product = Product.objects.filter(merchant=merchant, sku=sku).first() or ProductFactory(merchant=merchant, sku=sku)
    image, _ = product_image_add(product=product, source=data)
    image.refresh_from_db()
    return image


def indexed_ids() -> set[int]:
    index_sync()
    return set(live_index(force=True).index.ids().tolist())


def test_recompressed_copy_is_flagged_at_upload_with_the_product_it_copies(original):
    # when another merchant adds a low-quality recompression of A's photo
    copy = add_as("Shop B", encode(t_jpeg(scene(1), 20), quality=30))
    # then it is flagged on the way in, naming A's product, and is not searchable
    assert copy.copy_status == Status.FLAGGED
    assert copy.copy_of_id == original.pk and copy.copy_hash_distance is not None
    assert "A-1" in copy.copy_reason and "Shop A" in copy.copy_reason
    assert copy.pk not in indexed_ids() and original.pk in indexed_ids()


def test_mirrored_copy_is_caught_by_the_mirrored_hash(original):
    copy = add_as("Shop B", encode(ImageOps.mirror(scene(1))))
    assert copy.copy_status == Status.FLAGGED and copy.copy_of_id == original.pk
    assert "mirrored" in copy.copy_reason


def test_cropped_copy_is_flagged_at_embedding_and_searchable_only_once_cleared(original):
    # given a crop: the perceptual hash no longer matches (16 bits apart here)
    copy = add_as("Shop B", encode(t_crop(scene(1), 0.85)))
    # then the embedding step flagged it before its vector reached the index
    assert copy.copy_status == Status.FLAGGED and copy.copy_hash_distance is None
    assert copy.copy_similarity >= 0.9 and copy.copy_of_id == original.pk
    assert not copy.needs_embedding  # embedded, yet
    assert copy.pk not in indexed_ids()
    # when staff clear it, it goes to search (the decision queues the sync itself)
    product_image_copy_decide(image=copy, is_copy=False, user=UserFactory(is_staff=True))
    assert copy.pk in set(live_index(force=True).index.ids().tolist())


def test_confirmed_copy_stays_out_of_search(original):
    copy = add_as("Shop B", encode(ImageOps.mirror(scene(1))))
    product_image_copy_decide(image=copy, is_copy=True, user=UserFactory(is_staff=True))
    copy.refresh_from_db()
    assert copy.copy_status == Status.CONFIRMED and copy.pk not in indexed_ids()


def test_same_merchants_duplicate_and_different_photos_are_not_theft(original):
    # the same merchant reuses its photo (recompressed, mirrored) for a second product
    dupe = add_as("Shop A", encode(ImageOps.mirror(scene(1)), quality=40), sku="A-2")
    # another merchant adds its own, different photos
    others = [add_as("Shop B", encode(scene(seed)), sku=f"B-{seed}") for seed in range(2, 8)]
    assert dupe.copy_status == Status.NONE
    assert [o.copy_status for o in others] == [Status.NONE] * len(others)
    ids = indexed_ids()
    assert dupe.pk in ids and all(o.pk in ids for o in others)


def test_a_copy_embedded_before_its_original_is_still_flagged(copy_engine, settings):
    # given the original and the copy stored before anything was embedded
    settings.SEARCH_AUTO_INDEX = False
    a = ProductFactory(merchant=MerchantFactory(name="Shop A"), sku="A-1")
    first, _ = product_image_add(product=a, source=encode(scene(1)))
    b = ProductFactory(merchant=MerchantFactory(name="Shop B"), sku="B-1")
    copy, _ = product_image_add(product=b, source=encode(t_crop(scene(1), 0.85)))
    # when the copy's batch runs first, then the original's
    from search.embedding import product_images_embed

    product_images_embed(image_ids=[copy.pk])
    product_images_embed(image_ids=[first.pk])
    copy.refresh_from_db()
    first.refresh_from_db()
    assert copy.copy_status == Status.FLAGGED and copy.copy_of_id == first.pk
    assert first.copy_status == Status.NONE


def test_check_image_names_the_product_and_writes_nothing(original, tmp_path, capsys, settings):
    path = tmp_path / "suspect.jpg"
    path.write_bytes(encode(t_crop(ImageOps.mirror(scene(1)), 0.9)))
    media_before = sorted(p for p in settings.MEDIA_ROOT.rglob("*"))
    with CaptureQueriesContext(connection) as queries:
        call_command("check_image", str(path), "--merchant", "Shop B", "--json")
    answer = json.loads(capsys.readouterr().out)
    assert answer["copy"] is True
    assert answer["match"]["sku"] == "A-1" and answer["match"]["merchant"] == "Shop A"
    writes = [
        q["sql"] for q in queries.captured_queries if q["sql"].split()[0].upper() in ("INSERT", "UPDATE", "DELETE")
    ]
    assert writes == []
    assert sorted(p for p in settings.MEDIA_ROOT.rglob("*")) == media_before


def test_check_image_for_the_owner_or_a_different_photo_is_not_a_copy(original, tmp_path, capsys):
    own = tmp_path / "own.jpg"
    own.write_bytes(encode(scene(1)))
    call_command("check_image", str(own), "--merchant", "Shop A", "--json")
    assert json.loads(capsys.readouterr().out)["copy"] is False
    other = tmp_path / "other.jpg"
    other.write_bytes(encode(scene(42)))
    call_command("check_image", str(other), "--merchant", "Shop B")
    assert capsys.readouterr().out.startswith("not a copy")


def test_copy_scan_flags_copies_that_predate_the_check(original, capsys):
    # given a crop that got into the index without a check (stored before the feature)
    copy = add_as("Shop B", encode(t_crop(scene(1), 0.85)))
    ProductImage.objects.filter(pk=copy.pk).update(copy_status=Status.NONE, copy_of=None)
    assert copy.pk in indexed_ids()
    # when staff run the scan
    call_command("copy_scan")
    copy.refresh_from_db()
    assert copy.copy_status == Status.FLAGGED and copy.copy_of_id == original.pk
    assert copy.pk not in set(live_index(force=True).index.ids().tolist())
    assert "1 images flagged" in capsys.readouterr().out


def test_after_a_rollout_the_copy_check_still_compares_base_embedder_vectors(original):
    from search import training
    from search.embedding import embedder_active
    from search.integrity import copy_embedder_version
    from search.models import EmbedderVersion, ImageVector
    from vision.embed import make_embedder

    base = embedder_active()
    fine = make_embedder("pixels:16")  # stands in for a fine-tuned version
    new = EmbedderVersion.objects.create(version=fine.version, name="pixels:16", dim=fine.dim)
    training.embedder_activate(embedder=new)
    assert copy_embedder_version() == base
    # a crop (the hash misses it) from another merchant, while the new version serves
    copy = add_as("Shop B", encode(t_crop(scene(1), 0.85)))
    assert copy.copy_status == Status.FLAGGED and copy.copy_of_id == original.pk
    assert copy.copy_similarity >= 0.9
    # the image has a vector of each: the search one and the copy check's
    assert ImageVector.objects.filter(embedder=base, product_image=copy).exists()
    assert ImageVector.objects.filter(embedder=new, product_image=copy).exists()
    assert copy.pk not in indexed_ids()

"""Ingestion end to end in-process (eager tasks) with the raw-pixel embedder."""

import io
import json

import numpy as np
import pytest
from django.core.management import call_command
from PIL import Image

from catalog.models import ProductImage, ReviewImage
from catalog.services import product_image_add, review_image_add, review_image_label
from search.embedding import embedder_active
from search.indexing import index_path, index_sync
from search.live import live_index
from search.models import REVIEW_ID_OFFSET, ImageVector
from search.pipeline import search_pipeline
from search.services import embed_sweep
from tests.factories import ProductFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


def photo(seed: int, noise: float = 0.0, base_seed: int | None = None) -> bytes:
    """A random picture; with base_seed, a noisy copy of that picture."""
    rng = np.random.default_rng(seed)
    base = np.random.default_rng(base_seed if base_seed is not None else seed).integers(0, 255, (64, 64, 3))
    pixels = np.clip(base + rng.normal(0, noise, base.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).resize((128, 128), Image.Resampling.NEAREST).save(out, "PNG")
    return out.getvalue()


def search_skus(data: bytes, k: int = 3) -> list[str]:
    pipeline, _ = search_pipeline()
    result = pipeline.run(data, k=k)
    from catalog.models import Product

    products = Product.objects.in_bulk([h.product_id for h in result.hits])
    return [products[h.product_id].sku for h in result.hits]


@pytest.fixture
def shop(pixel_engine):
    products = [ProductFactory(sku=f"P{i}") for i in range(3)]
    for i, p in enumerate(products):
        product_image_add(product=p, source=photo(i))
    return products


def test_saved_images_are_embedded_and_searchable(shop):
    # then every image has a vector of the active version and is no longer dirty
    active = embedder_active()
    assert ImageVector.objects.filter(embedder=active, product_image__isnull=False).count() == 3
    assert not ProductImage.objects.filter(needs_embedding=True).exists()
    # and a noisy photo of product 1 finds product 1 first
    assert search_skus(photo(99, noise=20, base_seed=1))[0] == "P1"


def test_review_photos_are_scored_accepted_or_rejected(shop):
    good, _ = review_image_add(product=shop[0], source=photo(50, noise=15, base_seed=0))
    wrong, _ = review_image_add(product=shop[0], source=photo(2, noise=15, base_seed=2))  # product 2's look
    good.refresh_from_db()
    wrong.refresh_from_db()
    assert good.status == ReviewImage.Status.ACCEPTED and good.score > 0.8
    assert wrong.status == ReviewImage.Status.REJECTED and wrong.score < 0.4
    index_sync()
    ids = set(live_index(force=True).image_to_product)
    live = live_index(force=True)
    in_index = set(live.index.ids().tolist())
    assert REVIEW_ID_OFFSET + good.pk in in_index and REVIEW_ID_OFFSET + wrong.pk not in in_index
    assert REVIEW_ID_OFFSET + good.pk in ids


def test_staff_label_moves_a_photo_into_the_index(shop):
    wrong, _ = review_image_add(product=shop[0], source=photo(2, noise=15, base_seed=2))
    review_image_label(review=ReviewImage.objects.get(pk=wrong.pk), label="accepted", user=UserFactory(is_staff=True))
    assert REVIEW_ID_OFFSET + wrong.pk in set(live_index(force=True).index.ids().tolist())


def test_deactivated_product_disappears_and_comes_back(shop):
    query = photo(99, noise=20, base_seed=1)
    shop[1].is_active = False
    shop[1].save()  # the save queues an index sync (eager here)
    assert "P1" not in search_skus(query)
    shop[1].is_active = True
    shop[1].save()
    assert search_skus(query)[0] == "P1"


def test_deleted_image_leaves_the_index(shop):
    shop[2].images.all().delete()
    assert "P2" not in search_skus(photo(2), k=3)


def test_missed_images_are_caught_by_the_sweep(shop, settings):
    # given images saved while nothing was enqueued (a broker outage looks the same)
    settings.SEARCH_AUTO_INDEX = False
    product = ProductFactory(sku="LATE")
    product_image_add(product=product, source=photo(7))
    assert ProductImage.objects.filter(needs_embedding=True).count() == 1
    # when the sweep runs
    done, more = embed_sweep()
    index_sync()
    # then the image is embedded and found
    assert (done, more) == (1, False)
    assert search_skus(photo(7))[0] == "LATE"


@pytest.mark.parametrize("damage", ["delete", "truncate", "garbage"])
def test_a_damaged_index_file_is_rebuilt_from_the_database(shop, damage):
    path = index_path(embedder=embedder_active())
    assert path.exists()
    if damage == "delete":
        path.unlink()
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    else:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    live = live_index(force=True)
    assert live.index.ntotal == 3
    assert search_skus(photo(0))[0] == "P0"


def test_search_photo_command_prints_skus_in_rank_order(shop, tmp_path, capsys):
    query = tmp_path / "q.png"
    query.write_bytes(photo(98, noise=20, base_seed=2))
    call_command("search_photo", str(query), "--k", "2", "--json")
    out = json.loads(capsys.readouterr().out)
    assert [r["sku"] for r in out["results"]][0] == "P2"
    assert len(out["results"]) == 2 and out["results"][0]["score"] >= out["results"][1]["score"]


def test_rebuild_index_command(shop, capsys):
    call_command("rebuild_index")
    assert "3 vectors" in capsys.readouterr().out


def test_web_processes_swap_in_a_newer_index_and_keep_the_old_one_usable(shop):
    before = live_index()
    product_image_add(product=ProductFactory(sku="NEW"), source=photo(11))  # embedded and synced (eager)
    after = live_index()
    assert after is not before and after.generation > before.generation
    assert after.index.ntotal == before.index.ntotal + 1
    # a request that began on the old index finishes on it
    query = (np.ones((1, before.index.dim)) / np.sqrt(before.index.dim)).astype(np.float32)
    scores, ids = before.index.search(query, 3)
    assert (ids >= 0).sum() == 3
    assert search_skus(photo(11))[0] == "NEW"

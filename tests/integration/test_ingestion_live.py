"""The whole ingestion path on real services with the real embedder: import a slice of the
shared Grocery Store catalog while a worker runs; no manual step later, search_photo finds
the products, accepted review photos included."""

import json
import shutil
from pathlib import Path

import pytest

from catalog.models import ReviewImage
from search.models import EmbedderVersion, ImageVector
from tests.integration.conftest import manage, process_env, wait_for

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.weights]
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "grocery-store"
PRODUCTS = ["Granny-Smith", "Banana", "Oatly-Natural-Oatghurt", "Red-Bell-Pepper"]


def test_import_with_a_worker_running_gives_a_live_searchable_index(workers, redis_url, settings, tmp_path):
    catalog = tmp_path / "grocery"
    for sub in ("catalog", "reviews"):
        for key in PRODUCTS:
            shutil.copytree(SHARED / sub / key, catalog / sub / key)
    env = process_env(redis_url=redis_url, media_root=settings.MEDIA_ROOT, VISUALSHOP_SEARCH_DETECTOR="none")
    workers.start(env)
    imported = manage("import_catalog", str(catalog), "--merchant", "Grocer", "--no-progress", env=env)
    assert imported.returncode == 0, imported.stderr[-3000:]
    n_reviews = ReviewImage.objects.count()
    # the worker embeds everything, decides every review photo and syncs the index
    wait_for(lambda: not ReviewImage.objects.filter(needs_embedding=True).exists(), timeout=240)
    accepted = ReviewImage.objects.filter(status="accepted").count()
    assert accepted >= 0.8 * n_reviews
    wait_for(
        lambda: EmbedderVersion.objects.filter(is_active=True, index_count=len(PRODUCTS) + accepted).exists(),
        timeout=60,
    )
    assert ImageVector.objects.filter(review_image__status="accepted").count() == accepted
    # a shopper's photo that is not in the catalog finds its product
    query = sorted((SHARED / "queries" / "Granny-Smith").iterdir())[0]
    found = manage("search_photo", str(query), "--k", "3", "--json", env=env)
    assert found.returncode == 0, found.stderr[-3000:]
    results = json.loads(found.stdout)["results"]
    assert results[0]["sku"] == "Granny-Smith"

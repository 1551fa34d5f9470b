"""The click simulator: position bias, attractiveness, determinism through the real search."""

from decimal import Decimal

import numpy as np
import pytest
from django.core.management import call_command

from catalog.models import Merchant, Product
from catalog.services import product_image_add
from ranking.simulator import (
    SimConfig,
    SimShopper,
    attractiveness,
    click_probability,
    simulate,
    simulation_setup,
)
from search.models import Click, SearchQuery
from tests.factories import CategoryFactory, MerchantFactory, ProductFactory
from tests.search.test_ingestion import photo


def test_examination_falls_with_position():
    p = [click_probability(position=i, attractiveness=0.8, eta=1.0) for i in range(1, 6)]
    assert p == pytest.approx([0.8, 0.4, 0.8 / 3, 0.2, 0.16])
    assert click_probability(position=1, attractiveness=5.0, eta=1.0) == 1.0


def test_attractiveness_prefers_the_photographed_product_then_preferences():
    shopper = SimShopper("s", frozenset({1}), price_sensitivity=1.5, favourite_merchant=7)
    P = type("P", (), {})

    def product(sku, cat, merchant, price):
        p = P()
        p.sku, p.category_id, p.merchant_id, p.price = sku, cat, merchant, Decimal(price)
        return p

    roots = {1: 1, 2: 1, 3: 3}
    a = lambda p: attractiveness(shopper=shopper, key="A", product=p, root_of=roots, median_price=2.0,  # noqa: E731
                                 photo_category=2)  # fmt: skip
    assert a(product("A", 2, 8, "2.00")) > a(product("B", 2, 8, "2.00")) > a(product("C", 3, 8, "2.00"))
    assert a(product("A", 2, 7, "2.00")) > a(product("A", 2, 8, "2.00"))  # favourite merchant
    assert a(product("A", 2, 8, "1.00")) > a(product("A", 2, 8, "4.00"))  # price sensitive


@pytest.fixture
def tiny_shop(pixel_engine, tmp_path):
    """6 products with random-picture images; reviews/<sku>/ holds noisy copies of them."""
    cats = [CategoryFactory(name="Fruit", slug="fruit"), CategoryFactory(name="Packages", slug="packages")]
    folder, merchant = tmp_path / "shop", MerchantFactory(name="Demo")
    for i in range(6):
        p = ProductFactory(sku=f"K{i}", category=cats[i % 2], price="0", merchant=merchant)
        product_image_add(product=p, source=photo(i))
        d = folder / "reviews" / p.sku
        d.mkdir(parents=True)
        for j in range(3):
            (d / f"{j}.png").write_bytes(photo(100 + 10 * i + j, noise=25, base_seed=i))
    (folder / "queries").mkdir()  # present, never read
    return folder


def _log():
    return [
        (q.session_key, [(i.product.sku, i.position, i.clicks.exists()) for i in q.impressions.all()])
        for q in SearchQuery.objects.order_by("pk")
    ]


@pytest.mark.django_db(transaction=True)
def test_simulation_is_seeded_and_reproducible(tiny_shop):
    setup = simulation_setup(extra_merchants=1, variant_share=1.0, seed=0)
    assert setup["variants"] == 6 and Merchant.objects.count() == 2
    assert not Product.objects.filter(price=0).exists()
    config = SimConfig(searches=12, shoppers=3, k=4, seed=3)
    first = simulate(folder=tiny_shop, config=config)
    log1 = _log()
    SearchQuery.objects.all().delete()
    second = simulate(folder=tiny_shop, config=config)
    assert _log() == log1 and first.clicks == second.clicks == Click.objects.count() > 0
    assert first.searches == 12 and len({s for s, _ in log1}) <= 3
    # the photographed product is the most attractive one shown
    for truth in first.truth.values():
        assert max(truth.values()) >= 0.2


@pytest.mark.django_db(transaction=True)
def test_clicks_concentrate_on_top_positions(tiny_shop):
    report = simulate(folder=tiny_shop, config=SimConfig(searches=40, shoppers=4, k=5, seed=1, eta=1.5))
    by_pos = [report.clicks_by_position.get(i, 0) for i in range(1, 6)]
    assert by_pos[0] > sum(by_pos[2:])


@pytest.mark.django_db(transaction=True)
def test_simulate_clicks_command(tiny_shop):
    from io import StringIO

    out = StringIO()
    call_command("simulate_clicks", folder=tiny_shop, searches=5, shoppers=2, k=3, setup=True, stdout=out)
    assert "simulated 5 searches" in out.getvalue() and SearchQuery.objects.count() == 5
    assert all(q.session_key.startswith("sim-") for q in SearchQuery.objects.all())


def test_review_photos_never_reads_queries(tmp_path):
    from ranking.simulator import review_photos

    (tmp_path / "reviews" / "A").mkdir(parents=True)
    (tmp_path / "reviews" / "A" / "1.jpg").write_bytes(b"x")
    (tmp_path / "queries" / "A").mkdir(parents=True)
    (tmp_path / "queries" / "A" / "2.jpg").write_bytes(b"x")
    assert review_photos(tmp_path) == {"A": [tmp_path / "reviews" / "A" / "1.jpg"]}
    assert np.all([p.parent.parent.name == "reviews" for ps in review_photos(tmp_path).values() for p in ps])

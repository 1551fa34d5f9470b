"""CLICK SIMULATOR, for development, tests and offline evaluation only. Not real shoppers.

The CTR ranker needs click logs before real shoppers have made any; this module makes
synthetic ones through the real search path, so that everything downstream (features,
training, metrics, the admin) runs on data shaped like production's. Figures measured on
it say how the ranker behaves on this model of shoppers, not on people.

The model:

- Shoppers (each with its own session_key) have preferences: 1-2 favourite top-level
  categories (they photograph products from them FAVOURITE_SHARE of the time), a price
  sensitivity (log-normal around 1.5), and, when the catalog has several merchants, a
  favourite merchant.
- A search: the shopper takes a *review photo* (reviews/<key>/ of the interchange folder:
  phone photos of that product) and runs the real ``photo_search``. Never ``queries/``:
  those are reserved for evaluating the embedder, and logged searches may later train it.
  Photos whose bytes are stored in the catalog (imported review photos) are skipped, as
  they would match themselves exactly.
- Clicks follow the examination hypothesis: P(click at position i) =
  (1 / i ** eta) * min(1, attractiveness). Attractiveness = relevance x preference:
  relevance 1.0 for the photographed product (any merchant's variant of it: same SKU
  key), 0.2 for the same category, 0.05 for the same top-level category, 0.01 otherwise;
  preference = exp(0.7 [favourite category] + 0.9 [favourite merchant]
  - price_sensitivity * log(price / median price shown)), scaled by 0.6.
- Seeded: the same seed, catalog and index give the same searches and clicks.

``simulation_setup`` prepares a demo catalog for it (documented side effects, for a
development or benchmark database only): products priced 0 get a seeded price, and a few
extra merchants ("Sim Market ...") get price variants of some products (same SKU key,
title, category and image, price x0.7..1.3), because the demo catalog has one merchant and
no prices, and price and merchant features would otherwise say nothing.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import numpy as np

FAVOURITE_SHARE = 0.7
SIM_MERCHANT_PREFIX = "Sim Market"


@dataclass(frozen=True)
class SimShopper:
    session_key: str
    favourite_roots: frozenset[int]  # top-level category ids
    price_sensitivity: float
    favourite_merchant: int | None


@dataclass(frozen=True)
class SimConfig:
    searches: int = 200
    shoppers: int = 20
    k: int = 10
    eta: float = 1.0  # position bias: examination 1 / position ** eta
    seed: int = 0


@dataclass
class SimReport:
    searches: int = 0
    clicks: int = 0
    clicks_by_position: dict[int, int] = field(default_factory=dict)
    # query id -> {product id: attractiveness}: the simulator's ground truth, position-free
    truth: dict[int, dict[int, float]] = field(default_factory=dict)
    skipped_photos: int = 0


def _seeded(text: str, seed: int) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha256(f"{seed}:{text}".encode()).digest()[:8], "little"))


def simulation_setup(*, extra_merchants: int = 2, variant_share: float = 0.5, seed: int = 0) -> dict:
    """Seeded prices for unpriced products and price variants at extra merchants (see above)."""
    from catalog.models import Merchant, Product, ProductImage
    from catalog.services import merchant_get_or_create, product_image_add

    priced = 0
    for product in Product.objects.filter(price=0):
        rng = _seeded(product.sku, seed)
        product.price = Decimal(str(round(float(np.exp(rng.normal(math.log(2.5), 0.5))), 2)))
        product.save(update_fields=["price", "updated_at"])
        priced += 1
    originals = list(
        Product.objects.exclude(merchant__name__startswith=SIM_MERCHANT_PREFIX).filter(is_active=True).order_by("pk")
    )
    variants = 0
    for m in range(extra_merchants):
        merchant = merchant_get_or_create(name=f"{SIM_MERCHANT_PREFIX} {chr(ord('A') + m)}")
        for product in originals:
            rng = _seeded(f"{merchant.name}:{product.sku}", seed)
            if rng.random() >= variant_share or Product.objects.filter(merchant=merchant, sku=product.sku).exists():
                continue
            image = ProductImage.objects.filter(product=product).order_by("position", "pk").first()
            if image is None:
                continue
            variant = Product.objects.create(
                merchant=merchant, sku=product.sku, title=product.title, description=product.description,
                category=product.category, price=(product.price * Decimal(str(round(rng.uniform(0.7, 1.3), 2))))
                .quantize(Decimal("0.01")), currency=product.currency, stock=product.stock,
            )  # fmt: skip
            with image.file.open("rb") as fh:
                product_image_add(product=variant, source=fh.read(), name="variant.jpg")
            variants += 1
    return {"priced": priced, "variants": variants, "merchants": Merchant.objects.count()}


def _roots() -> dict[int, int]:
    """category id -> its top-level ancestor's id."""
    from catalog.models import Category

    parent = dict(Category.objects.values_list("pk", "parent_id"))
    out = {}
    for pk in parent:
        node, seen = pk, set()
        while parent.get(node) is not None and node not in seen:
            seen.add(node)
            node = parent[node]
        out[pk] = node
    return out


def make_shoppers(*, n: int, roots: list[int], merchants: list[int], rng: np.random.Generator) -> list[SimShopper]:
    shoppers = []
    for i in range(n):
        fav = rng.choice(roots, size=min(len(roots), int(rng.integers(1, 3))), replace=False) if roots else []
        shoppers.append(
            SimShopper(
                session_key=f"sim-{rng.integers(1 << 62):016x}-{i}",
                favourite_roots=frozenset(int(x) for x in fav),
                price_sensitivity=float(np.exp(rng.normal(math.log(1.5), 0.4))),
                favourite_merchant=int(rng.choice(merchants)) if len(merchants) > 1 else None,
            )
        )
    return shoppers


def attractiveness(
    *, shopper: SimShopper, key: str, product, root_of: dict[int, int], median_price: float, photo_category: int | None
) -> float:
    """How much `shopper`, who photographed product `key`, wants `product` (a Product row)."""
    if product.sku == key:
        relevance = 1.0
    elif photo_category is not None and product.category_id == photo_category:
        relevance = 0.2
    elif photo_category is not None and root_of.get(product.category_id) == root_of.get(photo_category):
        relevance = 0.05
    else:
        relevance = 0.01
    pref = 0.7 * (root_of.get(product.category_id) in shopper.favourite_roots)
    pref += 0.9 * (product.merchant_id == shopper.favourite_merchant)
    pref -= shopper.price_sensitivity * math.log(max(float(product.price), 0.01) / max(median_price, 0.01))
    return 0.6 * relevance * math.exp(pref)


def click_probability(*, position: int, attractiveness: float, eta: float) -> float:
    """The examination hypothesis: seen with probability 1/position**eta, then clicked
    with probability min(1, attractiveness)."""
    return min(1.0, attractiveness) / position**eta


def review_photos(folder: Path) -> dict[str, list[Path]]:
    """key -> its review photos (reviews/<key>/*), sorted. Never queries/."""
    out = {}
    for d in sorted((Path(folder) / "reviews").iterdir()):
        if d.is_dir():
            out[d.name] = sorted(p for p in d.iterdir() if p.is_file())
    return out


def simulate(
    *,
    folder: Path,
    config: SimConfig,
    rerank=None,
    progress: Callable[[int, int], None] | None = None,
) -> SimReport:
    """Run config.searches simulated searches with clicks through the real photo_search."""
    from catalog.models import Product, ProductImage, ReviewImage
    from search.models import Click
    from search.searching import SearchFilters, photo_search

    rng = np.random.default_rng(config.seed)
    root_of = _roots()
    products = list(Product.objects.filter(is_active=True).order_by("pk"))
    by_key: dict[str, Product] = {}
    for p in products:
        by_key.setdefault(p.sku, p)
    photos = {k: v for k, v in review_photos(folder).items() if k in by_key and v}
    if not photos:
        raise ValueError(f"no review photos in {folder}/reviews for the catalog's products")
    stored = set(ProductImage.objects.values_list("sha256", flat=True)) | set(
        ReviewImage.objects.values_list("sha256", flat=True)
    )
    keys = sorted(photos)
    roots = sorted({root_of[p.category_id] for p in products if p.category_id is not None})
    merchants = sorted({p.merchant_id for p in products})
    shoppers = make_shoppers(n=config.shoppers, roots=roots, merchants=merchants, rng=rng)
    fav_keys = {
        s.session_key: [k for k in keys if root_of.get(by_key[k].category_id) in s.favourite_roots] for s in shoppers
    }
    report = SimReport()
    kwargs = {} if rerank is None else {"rerank": rerank}
    while report.searches < config.searches:
        shopper = shoppers[int(rng.integers(len(shoppers)))]
        pool = (
            fav_keys[shopper.session_key] if fav_keys[shopper.session_key] and rng.random() < FAVOURITE_SHARE else keys
        )
        key = pool[int(rng.integers(len(pool)))]
        path = photos[key][int(rng.integers(len(photos[key])))]
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() in stored:
            report.skipped_photos += 1
            if report.skipped_photos > 10 * config.searches:
                raise ValueError("every review photo is stored in the catalog: nothing left to search with")
            continue
        outcome = photo_search(
            image=data, k=config.k, filters=SearchFilters(), channel="web", session_key=shopper.session_key, **kwargs
        )
        shown = [it.product for it in outcome.items]
        median_price = float(np.median([float(p.price) for p in shown])) if shown else 1.0
        truth = {}
        impressions = {imp.product_id: imp for imp in outcome.query.impressions.all()}
        for item in outcome.items:
            a = attractiveness(
                shopper=shopper, key=key, product=item.product, root_of=root_of,
                median_price=median_price, photo_category=by_key[key].category_id,
            )  # fmt: skip
            truth[item.product.pk] = a
            if rng.random() < click_probability(position=item.position, attractiveness=a, eta=config.eta):
                Click.objects.create(impression=impressions[item.product.pk], kind=Click.Kind.CLICK)
                report.clicks += 1
                report.clicks_by_position[item.position] = report.clicks_by_position.get(item.position, 0) + 1
        report.truth[outcome.query.pk] = truth
        report.searches += 1
        if progress is not None:
            progress(report.searches, config.searches)
    return report

"""The search path beyond detect and embed, at catalog scale.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/search_path_bench.py [--images 100000] [--queries 200]

Fills a throwaway database with N image vectors (10 views per product; clustered random
vectors of the MobileNetV2 dimension, one cluster per product), builds the live index
through the production code, then runs the production photo_search for real query photos
and reports p50/p95 of what follows the embedder: FAISS search + grouping by product,
filters, rerank, and writing the log (query, photo, impressions). Goal: <= 10 ms.
Optionally `--database-url postgres://...` to measure on PostgreSQL.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import _platform  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--per-product", type=int, default=10)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    env = {"VISUALSHOP_SEARCH_DETECTOR": "none"}
    if args.database_url:
        env["DATABASE_URL"] = args.database_url
    _platform.setup(**env)
    import torch

    torch.set_num_threads(1)
    from catalog.models import Merchant, Product, ProductImage
    from search.embedding import embedder_active
    from search.indexing import index_rebuild
    from search.models import ImageVector
    from search.searching import SearchFilters, photo_search

    active = embedder_active()
    merchant = Merchant.objects.create(name="Bench", slug="bench")
    n_products = args.images // args.per_product
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    Product.objects.bulk_create(
        Product(merchant=merchant, sku=f"S{i}", title=f"Product {i}", price=1, stock=1) for i in range(n_products)
    )
    product_ids = list(Product.objects.order_by("pk").values_list("pk", flat=True))
    centres = rng.normal(size=(n_products, active.dim)).astype(np.float32)
    batch = 5_000
    for start in range(0, args.images, batch):
        owners = [product_ids[i // args.per_product] for i in range(start, min(start + batch, args.images))]
        images = ProductImage.objects.bulk_create(
            ProductImage(product_id=pid, file=f"products/fake/{start + j}.jpg", width=1, height=1,
                         sha256=f"{start + j:064d}", phash="0" * 16, needs_embedding=False)
            for j, pid in enumerate(owners)
        )  # fmt: skip
        vecs = centres[[(start + j) // args.per_product for j in range(len(owners))]]
        vecs = vecs + 0.5 * rng.normal(size=vecs.shape).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        ImageVector.objects.bulk_create(
            ImageVector(embedder=active, product_id=img.product_id, product_image=img, image_sha256=img.sha256,
                        vector=v.astype(np.float32).tobytes())
            for img, v in zip(images, vecs)
        )  # fmt: skip
    fill_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    index_rebuild(embedder=active)
    build_s = time.perf_counter() - t0

    photos = sorted(_platform.SHARED.glob("queries/*/*"))[: args.queries]
    rows = []
    for i, path in enumerate(photos):
        outcome = photo_search(image=path.read_bytes(), k=12, filters=SearchFilters(), channel="api")
        if i >= 5:  # warm-up: first loads of the index and the model
            rows.append(outcome.timings_ms)
    stages = ["search", "filter", "rerank", "log"]
    rows_after = [sum(r[s] for s in stages) for r in rows]
    report = {
        "images": args.images,
        "database": "postgresql" if args.database_url else "sqlite",
        "factory": None,
        "fill_s": round(fill_s, 1),
        "index_build_s": round(build_s, 1),
        "queries": len(rows),
        **{f"{s}_ms": {p: round(float(np.percentile([r[s] for r in rows], p)), 2) for p in (50, 95)} for s in stages},
        "after_embed_ms": {p: round(float(np.percentile(rows_after, p)), 2) for p in (50, 95)},
    }
    from search.live import live_index

    report["factory"] = live_index().index.factory
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

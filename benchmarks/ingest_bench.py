"""Ingestion throughput: photos embedded and indexed per second by one worker process.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ingest_bench.py [--photos 640] [--batches 8,16,32,64]

Runs the production services (search.services.embed_sweep, then an index sync) on a
throwaway SQLite database and media folder, over the shared Grocery Store review photos
(348 px), with the configured embedder (MobileNetV2 at 224 by default) on one thread.
Import time is excluded; decoding, embedding, scoring, storing and indexing are included.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import _platform  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=_platform.SHARED)
    parser.add_argument("--photos", type=int, default=640)
    parser.add_argument("--batches", default="8,16,32,64")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    _platform.setup(VISUALSHOP_REVIEW_SPOT_CHECK_FRACTION="0")
    from catalog.models import Merchant, ProductImage, ReviewImage
    from catalog.services import product_image_add, product_upsert, review_image_add
    from search import services
    from search.embedding import embedder_active, embedder_load
    from search.indexing import index_sync
    from search.models import ImageVector

    merchant = Merchant.objects.create(name="Bench", slug="bench")
    files = sorted((args.dataset / "reviews").glob("*/*"))[: args.photos]
    for f in files:
        product, _ = product_upsert(merchant=merchant, sku=f.parent.name, title=f.parent.name)
        if not product.images.exists():
            for c in sorted((args.dataset / "catalog" / f.parent.name).iterdir()):
                product_image_add(product=product, source=c.read_bytes())
        review_image_add(product=product, source=f.read_bytes())
    active = embedder_active()
    embedder_load(active.name).embed([])  # load the model outside the timing
    services.images_embed(kind="product", image_ids=list(ProductImage.objects.values_list("pk", flat=True)))
    index_sync(embedder=active)

    results = []
    for batch in [int(b) for b in args.batches.split(",")]:
        ImageVector.objects.filter(review_image__isnull=False).delete()
        ReviewImage.objects.update(needs_embedding=True, status="pending")
        index_sync(embedder=active)
        services.EMBED_BATCH = batch
        t0 = time.perf_counter()
        done = _platform.embed_all()
        t1 = time.perf_counter()
        index_sync(embedder=active)
        t2 = time.perf_counter()
        results.append(
            {
                "batch": batch,
                "photos": done,
                "embed_s": round(t1 - t0, 2),
                "index_s": round(t2 - t1, 3),
                "photos_per_s": round(done / (t2 - t0), 1),
            }
        )
        print(results[-1], flush=True)
    report = {"embedder": active.version, "threads": int(os.environ.get("OMP_NUM_THREADS", "0") or 0), "runs": results}
    print("| batch | photos | embed s | index s | photos/s |\n|---|---|---|---|---|")
    for r in results:
        print(f"| {r['batch']} | {r['photos']} | {r['embed_s']} | {r['index_s']} | {r['photos_per_s']} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

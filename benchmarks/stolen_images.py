"""Stolen-image detection on the shared Grocery Store set, through the production code.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/stolen_images.py [--photos-per-product 0] [--json OUT]

Merchant A imports the catalog (81 studio images). Merchant B then adds product images:
copies of A's images (vision.nearcopy.TRANSFORMS: resize, JPEG recompression, crops,
mirror, text and logo watermarks, colour shift, greyscale and combinations) and genuine
photos that are not copies (the shoppers' phone photos in reviews/, which show the same
products and, for every other studio image, a similar or different product).

The products are split in two by their sorted position. On the calibration half the
read-only check (the one behind ``manage.py check_image``) gives each photo's closest hash
distance and similarity to A's images, and the thresholds are chosen there: the hash
threshold is the largest distance no genuine photo reaches, less a 2-bit margin; the
similarity threshold is the middle of the range that catches the most copies with at most
--target-false-alarms of genuine photos flagged. On the test half, B uploads through
``product_image_add`` and the production embed sweep at those thresholds, and the flags in
the database are counted; the index built from the database is checked to hold no flagged
image. Same-item groups formed by the copies are checked against the SKU they copied.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import _platform  # noqa: E402

MERCHANT_A, MERCHANT_B = "Grocery A", "Grocery B"


def jpeg(img, quality: int = 92) -> bytes:
    out = io.BytesIO()
    img.convert("RGB").save(out, format="JPEG", quality=quality)
    return out.getvalue()


def samples(dataset: Path, keys: list[str], photos_per_product: int):
    """(key, kind, name, bytes): kind is a transform name for copies, "photo" for genuine photos."""
    from PIL import Image

    from vision.nearcopy import TRANSFORMS

    for key in keys:
        original = sorted((dataset / "catalog" / key).glob("*.jpg"))[0]
        with Image.open(original) as img:
            img = img.convert("RGB")
            for name, transform in TRANSFORMS.items():
                # jpeg_q25 is the recompression itself; everything else is saved as a shop would.
                out = transform(img)
                data = jpeg(out, 25) if name == "jpeg_q25" else jpeg(out)
                yield key, name, f"{key}-{name}.jpg", data
        photos = sorted((dataset / "reviews" / key).glob("*.jpg"))
        for path in photos[:photos_per_product] if photos_per_product else photos:
            yield key, "photo", path.name, path.read_bytes()


def choose_thresholds(rows: list[dict], target_fa: float) -> tuple[int, float, dict]:
    copies = [r for r in rows if r["kind"] != "photo"]
    photos = [r for r in rows if r["kind"] == "photo"]
    photo_hash = np.array([r["hash_distance"] for r in photos])
    photo_sim = np.array([r["similarity"] for r in photos])
    copy_hash = np.array([r["hash_distance"] for r in copies])
    copy_sim = np.array([r["similarity"] for r in copies])
    max_hash = int(min(photo_hash.min() - 1 - 2, 12))
    grid = np.round(np.arange(0.60, 0.99, 0.005), 3)
    caught = np.array([np.mean((copy_hash <= max_hash) | (copy_sim >= t)) for t in grid])
    fa = np.array([np.mean((photo_hash <= max_hash) | (photo_sim >= t)) for t in grid])
    feasible = fa <= target_fa
    best = caught[feasible].max()
    span = grid[feasible & (caught >= best)]
    min_sim = float(np.round((span.min() + span.max()) / 2, 2))
    detail = {
        "genuine_min_hash_distance": int(photo_hash.min()),
        "genuine_similarity_p99": float(np.percentile(photo_sim, 99)),
        "genuine_similarity_max": float(photo_sim.max()),
        "similarity_range_with_best_catch": [float(span.min()), float(span.max())],
        "calibration_caught": float(np.mean((copy_hash <= max_hash) | (copy_sim >= min_sim))),
        "calibration_false_alarms": float(np.mean((photo_hash <= max_hash) | (photo_sim >= min_sim))),
        "n_copies": len(copies),
        "n_photos": len(photos),
    }
    return max_hash, min_sim, detail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=_platform.SHARED)
    parser.add_argument("--photos-per-product", type=int, default=0, help="genuine photos per product (0: all)")
    parser.add_argument("--target-false-alarms", type=float, default=0.005)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    _platform.setup()
    import torch
    from django.conf import settings

    torch.set_num_threads(1)
    from catalog.importer import catalog_import
    from catalog.models import Product, ProductImage
    from catalog.services import merchant_get_or_create, product_image_add, product_upsert
    from search.embedding import embedder_active
    from search.indexing import index_load, index_rebuild
    from search.integrity import image_copy_check

    # Merchant A: the studio images only (reviews/ stays out of A's catalog).
    only_catalog = Path(tempfile.mkdtemp(prefix="stolen-"))
    (only_catalog / "catalog").symlink_to(args.dataset / "catalog")
    (only_catalog / "products.csv").symlink_to(args.dataset / "products.csv")
    catalog_import(root=only_catalog, merchant_name=MERCHANT_A)
    _platform.embed_all()
    a_products = {p.sku: p for p in Product.objects.filter(merchant__name=MERCHANT_A).select_related("category")}
    a_flagged = ProductImage.objects.filter(product__merchant__name=MERCHANT_A).exclude(copy_status="none").count()
    keys = sorted(a_products)
    calibration, test = keys[0::2], keys[1::2]

    # ---- calibration half: the read-only check, raw evidence
    t0 = time.perf_counter()
    rows = []
    for key, kind, _name, data in samples(args.dataset, calibration, args.photos_per_product):
        r = image_copy_check(data=data, merchant_name=MERCHANT_B)
        rows.append({"key": key, "kind": kind, "hash_distance": r.hash_distance, "similarity": r.similarity})
    max_hash, min_sim, calib = choose_thresholds(rows, args.target_false_alarms)
    calib["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"calibration ({len(calibration)} products): hash <= {max_hash}, similarity >= {min_sim}  {calib}")
    configured = (settings.COPY_MAX_HASH_DISTANCE, settings.COPY_MIN_SIMILARITY)
    settings.COPY_MAX_HASH_DISTANCE, settings.COPY_MIN_SIMILARITY = max_hash, min_sim

    # ---- test half: merchant B uploads through production; the sweep embeds and checks
    t0 = time.perf_counter()
    b = merchant_get_or_create(name=MERCHANT_B)
    uploaded: list[tuple[str, str, int]] = []  # (key, kind, image id)
    b_products: dict[tuple[str, str], Product] = {}
    for key, kind, name, data in samples(args.dataset, test, args.photos_per_product):
        group = "photos" if kind == "photo" else kind
        product = b_products.get((key, group))
        if product is None:
            a = a_products[key]
            product, _ = product_upsert(merchant=b, sku=f"{key}.{group}", title=a.title, price=a.price)
            b_products[key, group] = product
        image, _ = product_image_add(product=product, source=data, name=name)
        uploaded.append((key, kind, image.pk))
    # The same merchant adding its own photo to a second product is not theft.
    own_dupes = []
    for key in test:
        first = ProductImage.objects.filter(product=b_products[key, "photos"]).order_by("pk").first()
        again, _ = product_upsert(merchant=b, sku=f"{key}.again", title="again")
        with first.file.open("rb") as fh:
            dupe, _ = product_image_add(product=again, source=fh.read(), name="again.jpg")
        own_dupes.append((first.pk, dupe.pk))
    flagged_at_upload = ProductImage.objects.filter(product__merchant=b, copy_status="flagged").count()
    _platform.embed_all()
    upload_seconds = time.perf_counter() - t0

    images = ProductImage.objects.in_bulk([i for _, _, i in uploaded] + [d for _, d in own_dupes])
    by_kind: dict[str, Counter] = defaultdict(Counter)
    false_alarm_matches = Counter()
    for key, kind, image_id in uploaded:
        image = images[image_id]
        c = by_kind[kind]
        c["n"] += 1
        if image.copy_status == "flagged":
            c["flagged"] += 1
            matched = a_products_by_image(image.copy_of_id)
            c["right_product"] += matched == key
            c["by_hash"] += image.copy_hash_distance is not None
            if kind == "photo":
                same_cat = a_products[matched].category_id == a_products[key].category_id
                false_alarm_matches["same product" if matched == key else "similar (same category)" if same_cat
                                    else "other product"] += 1  # fmt: skip
    dupes_flagged = sum(images[d].copy_status == "flagged" and images[d].copy_of.product.merchant_id == b.pk
                        for _, d in own_dupes)  # fmt: skip

    # Same-item groups: a copy's product should sit with the A product it copied.
    grouped_right, grouped_photos = Counter(), 0
    for (key, group), product in b_products.items():
        product.refresh_from_db()
        if group == "photos":
            grouped_photos += product.item_group_id is not None
        else:
            grouped_right["n"] += 1
            grouped_right["right"] += product.item_group_id is not None and (
                product.item_group_id == Product.objects.get(pk=a_products[key].pk).item_group_id
            )

    embedder = embedder_active()
    index_rebuild(embedder=embedder)
    in_index = set(index_load(embedder=embedder).ids().tolist())
    flagged_ids = set(ProductImage.objects.filter(copy_status="flagged").values_list("pk", flat=True))
    leaked = len(in_index & flagged_ids)

    copies = {k: c for k, c in by_kind.items() if k != "photo"}
    n_copies = sum(c["n"] for c in copies.values())
    caught = sum(c["flagged"] for c in copies.values())
    photos = by_kind["photo"]
    report = {
        "thresholds": {"max_hash_distance": max_hash, "min_similarity": min_sim},
        "configured": {"max_hash_distance": configured[0], "min_similarity": configured[1]},
        "calibration": calib,
        "test_products": len(test),
        "copies": {k: dict(c) for k, c in copies.items()},
        "copies_caught": caught,
        "copies_n": n_copies,
        "copies_flagged_at_upload_by_hash": flagged_at_upload,
        "genuine_photos": dict(photos),
        "false_alarm_matches": dict(false_alarm_matches),
        "same_merchant_duplicates": {"n": len(own_dupes), "flagged_against_own_merchant": dupes_flagged},
        "merchant_a_images_flagged": a_flagged,
        "groups": {"copy_products": grouped_right["n"], "with_the_copied_product": grouped_right["right"],
                   "genuine_photo_products_grouped": grouped_photos, "genuine_photo_products": len(test)},
        "flagged_images_in_index": leaked,
        "upload_and_embed_seconds": round(upload_seconds, 1),
    }  # fmt: skip
    print(f"\ntest half: {len(test)} products; thresholds hash <= {max_hash} bits, similarity >= {min_sim}")
    print("| B uploads | n | flagged | flagged by hash | matched the copied SKU |\n|---|---|---|---|---|")
    for kind, c in sorted(copies.items()):
        print(f"| copy: {kind} | {c['n']} | {c['flagged']} | {c['by_hash']} | {c['right_product']} |")
    by_hash = sum(c["by_hash"] for c in copies.values())
    right = sum(c["right_product"] for c in copies.values())
    print(f"| **all copies** | {n_copies} | {caught} ({caught / n_copies:.1%}) | {by_hash} | {right} |")
    fa = photos["flagged"] / max(photos["n"], 1)
    print(f"| genuine photos (not copies) | {photos['n']} | {photos['flagged']} ({fa:.2%}) | {photos['by_hash']} | — |")
    print(f"false alarms matched: {dict(false_alarm_matches)}")
    print(f"same-merchant duplicates flagged against their own merchant: {dupes_flagged} of {len(own_dupes)};"
          f" A's own near-identical studio images flagged: {a_flagged}")  # fmt: skip
    print(f"copy products grouped with the product they copied: {grouped_right['right']} of {grouped_right['n']};"
          f" genuine-photo products grouped: {grouped_photos} of {len(test)}")  # fmt: skip
    print(f"flagged images in the index: {leaked}; upload + embed of the test half: {upload_seconds:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


_A_SKU_BY_IMAGE: dict[int, str] = {}


def a_products_by_image(image_id: int) -> str:
    from catalog.models import ProductImage

    if image_id not in _A_SKU_BY_IMAGE:
        _A_SKU_BY_IMAGE[image_id] = ProductImage.objects.select_related("product").get(pk=image_id).product.sku
    return _A_SKU_BY_IMAGE[image_id]


if __name__ == "__main__":
    main()

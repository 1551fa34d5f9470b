"""Review-photo cleaning on the shared Grocery Store set, through the production code.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/review_cleaning.py [--planted 200] [--json OUT]

Imports the catalog and its 2,640 review photos into a throwaway database, runs the
production sweep (embed, score, decide) at the configured thresholds and counts accepted,
rejected and sent-to-staff photos (all are genuine, so rejections are false). Then plants
photos of other products as reviews (a review photo of product X attached to product Y),
runs the sweep again and counts how many are caught (rejected or sent to staff).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import _platform  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=_platform.SHARED)
    parser.add_argument("--planted", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    _platform.setup(VISUALSHOP_REVIEW_SPOT_CHECK_FRACTION="0")
    import torch
    from django.conf import settings

    torch.set_num_threads(1)
    from catalog.importer import catalog_import
    from catalog.models import Product, ReviewImage
    from catalog.services import review_image_add

    catalog_import(root=args.dataset, merchant_name="Grocery")
    _platform.embed_all()
    genuine = Counter(ReviewImage.objects.values_list("status", flat=True))

    rng = random.Random(0)
    products = list(Product.objects.all())
    files = sorted(args.dataset.glob("reviews/*/*"))
    planted_ids = []
    for path in rng.sample(files, args.planted):
        wrong = rng.choice([p for p in products if p.sku != path.parent.name])
        review, created = review_image_add(product=wrong, source=path.read_bytes(), name=path.name)
        planted_ids.append(review.pk)
    _platform.embed_all()
    planted = Counter(ReviewImage.objects.filter(pk__in=planted_ids).values_list("status", flat=True))

    report = {
        "thresholds": {"accept_at": settings.REVIEW_ACCEPT_SCORE, "reject_below": settings.REVIEW_REJECT_SCORE},
        "genuine": {"n": sum(genuine.values()), **genuine},
        "planted": {"n": len(planted_ids), **planted, "caught": planted["rejected"] + planted["needs_review"]},
    }
    print(f"accept >= {settings.REVIEW_ACCEPT_SCORE}, reject < {settings.REVIEW_REJECT_SCORE}")
    print("| photos | n | accepted | needs_review | rejected |\n|---|---|---|---|---|")
    for name, c in (("genuine reviews", genuine), ("planted (other products)", planted)):
        print(f"| {name} | {sum(c.values())} | {c['accepted']} | {c['needs_review']} | {c['rejected']} |")
    print(f"planted caught (rejected or sent to staff): {report['planted']['caught']} of {len(planted_ids)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

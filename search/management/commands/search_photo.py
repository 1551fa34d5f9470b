import json as jsonlib
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from catalog.models import Product
from search.pipeline import search_pipeline
from vision.imageio import ImageError


class Command(BaseCommand):
    help = "Search the live index with a photo file (an operator's tool)."

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path)
        parser.add_argument("--k", type=int, default=5)
        parser.add_argument("--json", action="store_true", help="print JSON: skus and scores in rank order")

    def handle(self, *args, path: Path, k: int, json: bool, **options):
        if not path.is_file():
            raise CommandError(f"{path} is not a file")
        if not 1 <= k <= 100:
            raise CommandError("--k must be between 1 and 100")
        try:
            pipeline, _ = search_pipeline()
            result = pipeline.run(path.read_bytes(), k=k)
        except ImageError as exc:
            raise CommandError(f"{path}: {exc}") from exc
        products = Product.objects.select_related("merchant").in_bulk([h.product_id for h in result.hits])
        rows = [
            {
                "rank": i + 1,
                "sku": products[h.product_id].sku,
                "title": products[h.product_id].title,
                "merchant": products[h.product_id].merchant.name,
                "score": round(h.score, 4),
            }
            for i, h in enumerate(result.hits)
            if h.product_id in products
        ]
        box = result.box
        if json:
            self.stdout.write(
                jsonlib.dumps({"box": [box.x1, box.y1, box.x2, box.y2], "label": box.label, "results": rows})
            )
            return
        self.stdout.write(f"box {box.label} ({box.x1:.0f},{box.y1:.0f})-({box.x2:.0f},{box.y2:.0f})")
        for r in rows:
            self.stdout.write(f"{r['rank']:>2}. {r['score']:.3f}  {r['sku']}  {r['title']}  ({r['merchant']})")

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from catalog.images import ImageError
from search.integrity import image_copy_check


class Command(BaseCommand):
    help = (
        "Would this image be flagged as a copy of another merchant's product image if MERCHANT added it, "
        "and of which product? Compares the perceptual hash (and mirrored hash) and the active embedder's "
        "vector (and mirrored vector) with every other merchant's product images. Writes nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path, help="an image file")
        parser.add_argument("--merchant", required=True, help="the merchant that would add it (name)")
        parser.add_argument("--json", action="store_true", help="print the answer as JSON")

    def handle(self, *args, path: Path, merchant: str, json: bool = False, **options):
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc}") from exc
        try:
            result = image_copy_check(data=data, merchant_name=merchant)
        except ImageError as exc:
            raise CommandError(f"{path}: {exc}") from exc
        if json:
            self.stdout.write(_json(result.as_dict()))
            return
        if result.copy:
            m = result.match
            self.stdout.write(f"COPY of SKU {m['sku']} ({m['title']}) sold by {m['merchant']} — {result.reason}")
        else:
            self.stdout.write(f"not a copy: {result.reason}")
        self.stdout.write(
            f"closest other merchant's image: hash distance {result.hash_distance}, similarity {result.similarity}"
            f" (thresholds: hash <= {result.thresholds['max_hash_distance']},"
            f" similarity >= {result.thresholds['min_similarity']}; embedder {result.embedder or 'none: hash only'})"
        )


def _json(obj) -> str:
    return json.dumps(obj, indent=2)

from django.core.management.base import BaseCommand
from tqdm import tqdm

from search.integrity import product_images_copy_scan
from search.services import index_sync_active


class Command(BaseCommand):
    help = (
        "Check every product image already embedded for near-copies of other merchants' images (a catalog "
        "that predates the check, or new thresholds), flag what is found and sync the index."
    )

    def handle(self, *args, **options):
        flagged = product_images_copy_scan(progress=lambda it: tqdm(it, desc="scan", file=self.stderr._out))
        result = index_sync_active()
        self.stdout.write(f"{len(flagged)} images flagged; index: {result.total} vectors ({result.removed} removed)")

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from catalog.importer import CatalogFolderError, catalog_import


class Command(BaseCommand):
    help = "Import a catalog folder in the interchange layout (products.csv, catalog/, reviews/). Idempotent."

    def add_arguments(self, parser):
        parser.add_argument("directory", type=Path)
        parser.add_argument("--merchant", default="Demo Grocer", help="merchant that owns the products")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, directory: Path, merchant: str, no_progress: bool, verbosity: int, **options):
        if not directory.is_dir():
            raise CommandError(f"{directory} is not a folder")
        show = not no_progress and verbosity > 0

        def progress(rows):
            return tqdm(rows, desc="products", unit="product", disable=not show, file=self.stderr._out)

        try:
            report = catalog_import(root=directory, merchant_name=merchant, progress=progress)
        except CatalogFolderError as exc:
            raise CommandError(str(exc)) from exc
        for path, message in report.errors:
            self.stderr.write(f"skipped {path}: {message}")
        self.stdout.write(
            f"products: {report.products_created} created, {report.products_updated} updated, "
            f"{report.products_unchanged} unchanged; images added: {report.images_added}; "
            f"review photos added: {report.reviews_added}; already present: {report.images_skipped_duplicate}; "
            f"errors: {len(report.errors)}"
        )

"""Import a catalog laid out in the interchange format.

    products.csv          key,title,category,description[,price,currency,stock]  (optional)
    catalog/<key>/*       the product's images (required)
    reviews/<key>/*       shoppers' review photos (optional; imported as pending)
    queries/              ignored here: evaluation only

Idempotent: products are matched on (merchant, key as sku) and images on their content
hash, so a second run changes nothing. A broken image is reported and skipped.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

from django.db import transaction

from catalog.images import ImageError
from catalog.services import (
    category_get_or_create_path,
    merchant_get_or_create,
    product_image_add,
    product_upsert,
    review_image_add,
)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


class CatalogFolderError(ValueError):
    pass


@dataclass
class ImportReport:
    products_created: int = 0
    products_updated: int = 0
    products_unchanged: int = 0
    images_added: int = 0
    reviews_added: int = 0
    images_skipped_duplicate: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, message)

    @property
    def changed(self) -> bool:
        return bool(self.products_created or self.products_updated or self.images_added or self.reviews_added)


@dataclass(frozen=True)
class ProductRow:
    key: str
    title: str
    category: str = ""
    description: str = ""
    price: Decimal | None = None
    currency: str | None = None
    stock: int | None = None


def _image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_product_rows(root: Path) -> list[ProductRow]:
    """Rows from products.csv, plus a bare row for any catalog/<key>/ folder it lacks."""
    catalog_dir = root / "catalog"
    if not catalog_dir.is_dir():
        raise CatalogFolderError(f"{root} has no catalog/ folder: not a catalog in the interchange layout")
    rows: dict[str, ProductRow] = {}
    csv_path = root / "products.csv"
    if csv_path.exists():
        with csv_path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or "key" not in reader.fieldnames:
                raise CatalogFolderError(f"{csv_path} must have a 'key' column")
            for line, rec in enumerate(reader, start=2):
                key = (rec.get("key") or "").strip()
                if not key:
                    raise CatalogFolderError(f"{csv_path}:{line}: empty key")
                try:
                    price = Decimal(rec["price"]) if (rec.get("price") or "").strip() else None
                    stock = int(rec["stock"]) if (rec.get("stock") or "").strip() else None
                except (InvalidOperation, ValueError) as exc:
                    raise CatalogFolderError(f"{csv_path}:{line}: bad price or stock ({exc})") from exc
                rows[key] = ProductRow(
                    key=key,
                    title=(rec.get("title") or "").strip() or key.replace("-", " "),
                    category=(rec.get("category") or "").strip(),
                    description=(rec.get("description") or "").strip(),
                    price=price,
                    currency=(rec.get("currency") or "").strip().upper() or None,
                    stock=stock,
                )
    for folder in sorted(p for p in catalog_dir.iterdir() if p.is_dir()):
        rows.setdefault(folder.name, ProductRow(key=folder.name, title=folder.name.replace("-", " ")))
    return list(rows.values())


def catalog_import(
    *,
    root: Path,
    merchant_name: str,
    progress: Callable[[Iterable], Iterable] = lambda it: it,
) -> ImportReport:
    root = Path(root)
    rows = read_product_rows(root)
    merchant = merchant_get_or_create(name=merchant_name)
    report = ImportReport()
    for row in progress(rows):
        with transaction.atomic():  # one product with its photos: one batch of embed tasks
            _import_product(row, merchant, root, report)
    return report


def _import_product(row: ProductRow, merchant, root: Path, report: ImportReport) -> None:
    category = category_get_or_create_path(path=row.category) if row.category else None
    product, outcome = product_upsert(
        merchant=merchant,
        sku=row.key,
        title=row.title,
        description=row.description,
        category=category,
        price=row.price,
        currency=row.currency,
        stock=row.stock,
    )
    setattr(report, f"products_{outcome}", getattr(report, f"products_{outcome}") + 1)
    for subdir, add in (("catalog", product_image_add), ("reviews", review_image_add)):
        for path in _image_files(root / subdir / row.key):
            try:
                _, created = add(product=product, source=path.read_bytes(), name=path.name)
            except (ImageError, OSError) as exc:
                report.errors.append((str(path), str(exc)))
                continue
            if not created:
                report.images_skipped_duplicate += 1
            elif subdir == "catalog":
                report.images_added += 1
            else:
                report.reviews_added += 1

"""Catalog writes: the use cases. Functions are keyword-only and assume valid input."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import BinaryIO

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from catalog.images import PreparedImage, image_prepare
from catalog.integrity import item_group_link, product_image_flag_fields, product_image_hash_match
from catalog.models import Category, Merchant, Product, ProductImage, ReviewImage


def merchant_get_or_create(*, name: str) -> Merchant:
    merchant, _ = Merchant.objects.get_or_create(name=name, defaults={"slug": slugify(name)[:200]})
    return merchant


def category_get_or_create_path(*, path: str) -> Category | None:
    """ "Fruit/Apple" -> the Apple category under Fruit, creating both if needed."""
    parent = None
    for name in (part.strip() for part in path.split("/")):
        if not name:
            continue
        parent, _ = Category.objects.get_or_create(parent=parent, slug=slugify(name)[:200], defaults={"name": name})
    return parent


def product_upsert(
    *,
    merchant: Merchant,
    sku: str,
    title: str,
    description: str = "",
    category: Category | None = None,
    price: Decimal | None = None,
    currency: str | None = None,
    stock: int | None = None,
) -> tuple[Product, str]:
    """Create the product, or update the fields that differ.

    Returns the product and what happened: "created", "updated" or "unchanged".
    """
    fields = {"title": title, "description": description, "category": category}
    fields |= {k: v for k, v in {"price": price, "currency": currency, "stock": stock}.items() if v is not None}
    product = Product.objects.filter(merchant=merchant, sku=sku).first()
    if product is None:
        fields.setdefault("price", Decimal("0"))
        return Product.objects.create(merchant=merchant, sku=sku, **fields), "created"
    changed = [name for name, value in fields.items() if getattr(product, name) != value]
    for name in changed:
        setattr(product, name, fields[name])
    if changed:
        product.save(update_fields=[*changed, "updated_at"])
    return product, "updated" if changed else "unchanged"


def _image_add(model, *, product: Product, source: bytes | BinaryIO, name: str, before_save=None, **extra):
    data = source if isinstance(source, bytes) else source.read()
    # Most files are stored as they came, so their raw hash finds a re-import without decoding.
    existing = model.objects.filter(product=product, sha256=hashlib.sha256(data).hexdigest()).first()
    if existing is not None:
        return existing, False
    prepared = image_prepare(source=data, name=name)
    existing = model.objects.filter(product=product, sha256=prepared.sha256).first()
    if existing is not None:
        return existing, False
    image = model(
        product=product,
        width=prepared.width,
        height=prepared.height,
        sha256=prepared.sha256,
        phash=prepared.phash,
        **extra,
    )
    if before_save is not None:
        before_save(image, prepared)
    image.file.save(prepared.content.name, prepared.content, save=False)
    try:
        with transaction.atomic():
            image.save()
    except IntegrityError:
        # The same photo arrived twice at once: keep the first, drop our file.
        image.file.delete(save=False)
        return model.objects.get(product=product, sha256=prepared.sha256), False
    return image, True


def product_image_add(
    *, product: Product, source: bytes | BinaryIO, name: str = "image", position: int | None = None
) -> tuple[ProductImage, bool]:
    """Validate and store a product image; an identical image of the same product is not stored twice.

    An image whose perceptual hash (or mirrored hash) is close to another merchant's image
    is stored flagged, so it never reaches search before staff decide (catalog/integrity.py).
    """
    if position is None:
        position = product.images.count()

    def flag_if_copied(image: ProductImage, prepared: PreparedImage) -> None:
        match = product_image_hash_match(
            merchant_id=product.merchant_id, phash=prepared.phash, mirror_phash=prepared.mirror_phash
        )
        if match is not None:
            for field, value in product_image_flag_fields(match=match).items():
                setattr(image, field, value)

    image, created = _image_add(
        ProductImage, product=product, source=source, name=name, position=position, before_save=flag_if_copied
    )
    if created and image.copy_of_id is not None:
        item_group_link(product=product, other=image.copy_of.product)
    return image, created


def review_image_add(*, product: Product, source: bytes | BinaryIO, name: str = "review") -> tuple[ReviewImage, bool]:
    """Store a shopper's review photo; it starts pending until it is cleaned."""
    return _image_add(ReviewImage, product=product, source=source, name=name)


def review_image_label(*, review: ReviewImage, label: str, user: AbstractBaseUser) -> ReviewImage:
    """A staff decision: it overrides the automatic one."""
    review.staff_label = label
    review.status = label
    review.labeled_by = user
    review.labeled_at = timezone.now()
    review.save(update_fields=["staff_label", "status", "labeled_by", "labeled_at"])
    return review


def image_refresh_fingerprint(*, image: ProductImage | ReviewImage) -> bool:
    """Recompute size and hashes from the stored file (after a file was replaced in storage)."""
    with image.file.open("rb") as fh:
        prepared = image_prepare(source=fh.read(), name=image.file.name)
    new = {"width": prepared.width, "height": prepared.height, "sha256": prepared.sha256, "phash": prepared.phash}
    changed = [k for k, v in new.items() if getattr(image, k) != v]
    for k in changed:
        setattr(image, k, new[k])
    if changed:
        image.save(update_fields=changed)
    return bool(changed)


class DuplicateSku(ValueError):
    pass


def product_create(*, merchant: Merchant, sku: str, title: str, price: Decimal, **fields) -> Product:
    if Product.objects.filter(merchant=merchant, sku=sku).exists():
        raise DuplicateSku(f"{merchant.name} already has a product with SKU {sku!r}")
    return Product.objects.create(merchant=merchant, sku=sku, title=title, price=price, **fields)


def product_update(*, product: Product, **fields) -> Product:
    changed = [name for name, value in fields.items() if getattr(product, name) != value]
    for name in changed:
        setattr(product, name, fields[name])
    if changed:
        product.save(update_fields=[*changed, "updated_at"])
    return product


def product_deactivate(*, product: Product) -> Product:
    """Hide from shoppers; the index drops its images at the next sync."""
    return product_update(product=product, is_active=False)

"""Marketplace integrity: copied product images and same-item groups (writes and reads).

A product image that is a near-copy of another merchant's image (vision/nearcopy.py) is
*flagged*: it stays out of search (search/indexing.py) until staff confirm the copy (it
stays out) or clear it (it goes to search). The earlier upload is presumed the original.
Here runs the synchronous part, the perceptual-hash check at upload; the embedding part
runs when the image is embedded (search/integrity.py), before its vector can reach the
index.

A near-copy across merchants also means the two products are very likely the same item
(a shared manufacturer photo, or a copier selling the same thing): both go into one
:class:`ItemGroup` for price comparison, which staff confirm or split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from catalog.models import ItemGroup, Product, ProductImage
from vision.nearcopy import CopyPolicy, Evidence, closest, hashes_to_uint64

CopyStatus = ProductImage.CopyStatus
GroupStatus = Product.GroupStatus


def copy_policy() -> CopyPolicy:
    return CopyPolicy(max_hash_distance=settings.COPY_MAX_HASH_DISTANCE, min_similarity=settings.COPY_MIN_SIMILARITY)


@dataclass(frozen=True)
class CopyMatch:
    """Why an image is taken for a copy of ``original`` (another merchant's image)."""

    original_id: int
    hash_distance: int | None
    similarity: float | None
    mirrored: bool
    by: str  # "hash" or "embedding": the evidence that decided

    def reason(self, original: ProductImage) -> str:
        product = original.product
        evidence = (
            f"perceptual hash {self.hash_distance} of 64 bits apart"
            if self.by == "hash"
            else f"embedding similarity {self.similarity:.2f}"
        )
        mirrored = ", mirrored" if self.mirrored else ""
        return (
            f"Near-copy of the image of SKU {product.sku} ({product.title}) sold by {product.merchant.name}"
            f" ({evidence}{mirrored}). Hidden from search until staff review it."
        )[:300]


def copy_match_from_evidence(
    evidence: Evidence, *, ids: np.ndarray, policy: CopyPolicy, vector_ids: np.ndarray | None = None
) -> CopyMatch | None:
    """The decision for one image. The hash wins when both decide (it is the stronger proof)."""
    vector_ids = ids if vector_ids is None else vector_ids
    by_hash = evidence.hash_distance is not None and evidence.hash_distance <= policy.max_hash_distance
    by_embedding = evidence.similarity is not None and evidence.similarity >= policy.min_similarity
    if by_hash:
        return CopyMatch(
            original_id=int(ids[evidence.hash_index]),
            hash_distance=evidence.hash_distance,
            similarity=evidence.similarity if by_embedding else None,
            mirrored=evidence.hash_mirrored,
            by="hash",
        )
    if by_embedding:
        return CopyMatch(
            original_id=int(vector_ids[evidence.similarity_index]),
            hash_distance=None,
            similarity=evidence.similarity,
            mirrored=evidence.similarity_mirrored,
            by="embedding",
        )
    return None


def hash_candidates(*, merchant_id: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(image ids, 64-bit hashes) of every other merchant's product images.

    One query and a vectorised popcount: about 10 ms per 100k images. Far beyond that,
    a BK-tree or a FAISS binary index would take its place.
    """
    qs = ProductImage.objects.all()
    if merchant_id is not None:
        qs = qs.exclude(product__merchant_id=merchant_id)
    rows = list(qs.order_by("pk").values_list("pk", "phash"))
    return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)), hashes_to_uint64(r[1] for r in rows)


def product_image_hash_match(
    *, merchant_id: int | None, phash: str, mirror_phash: str, policy: CopyPolicy | None = None
) -> CopyMatch | None:
    """Read-only: is an image with these hashes a near-copy of another merchant's image?"""
    ids, hashes = hash_candidates(merchant_id=merchant_id)
    evidence = closest(
        phash=int(phash, 16),
        mirror_phash=int(mirror_phash, 16),
        vectors=None,
        candidate_hashes=hashes,
        candidate_vectors=None,
    )
    return copy_match_from_evidence(evidence, ids=ids, policy=policy or copy_policy())


def product_image_flag_fields(*, match: CopyMatch) -> dict:
    original = ProductImage.objects.select_related("product__merchant").get(pk=match.original_id)
    return {
        "copy_status": CopyStatus.FLAGGED,
        "copy_of": original,
        "copy_reason": match.reason(original),
        "copy_hash_distance": match.hash_distance,
        "copy_similarity": match.similarity,
    }


def product_image_flag(*, image: ProductImage, match: CopyMatch) -> ProductImage:
    """Flag an image as a near-copy (a staff decision is never overturned) and group the products."""
    if image.copy_status != CopyStatus.NONE:
        return image
    fields = product_image_flag_fields(match=match)
    for name, value in fields.items():
        setattr(image, name, value)
    # A queryset update: no post_save, so nothing is enqueued; the image has no vector yet
    # or is about to lose it at the sync the embed task triggers.
    ProductImage.objects.filter(pk=image.pk, copy_status=CopyStatus.NONE).update(**fields)
    item_group_link(product=image.product, other=fields["copy_of"].product)
    return image


def product_image_copy_decide(*, image: ProductImage, is_copy: bool, user: AbstractBaseUser) -> ProductImage:
    """Staff decision: a confirmed copy stays out of search, a cleared image goes in."""
    image.copy_status = CopyStatus.CONFIRMED if is_copy else CopyStatus.CLEARED
    image.copy_decided_by = user
    image.copy_decided_at = timezone.now()
    # post_save with copy_status in update_fields queues an index sync (search/signals.py).
    image.save(update_fields=["copy_status", "copy_decided_by", "copy_decided_at"])
    return image


# --------------------------------------------------------------------------- same-item groups


def item_group_link(*, product: Product, other: Product) -> ItemGroup | None:
    """Put two products of different merchants into one same-item group (suggested).

    A product staff split out stays alone; two groups meet only if staff confirmed
    neither (then the smaller joins the larger).
    """
    if product.pk == other.pk or product.merchant_id == other.merchant_id:
        return None
    with transaction.atomic():
        a, b = (Product.objects.select_for_update().get(pk=pk) for pk in sorted((product.pk, other.pk)))
        if GroupStatus.SPLIT in (a.item_group_status, b.item_group_status):
            return None
        if a.item_group_id and a.item_group_id == b.item_group_id:
            return a.item_group
        if a.item_group_id is None and b.item_group_id is None:
            group = ItemGroup.objects.create()
            Product.objects.filter(pk__in=[a.pk, b.pk]).update(
                item_group=group, item_group_status=GroupStatus.SUGGESTED
            )
            return group
        if a.item_group_id is None or b.item_group_id is None:
            group_id = a.item_group_id or b.item_group_id
            loose = a if a.item_group_id is None else b
            Product.objects.filter(pk=loose.pk).update(item_group_id=group_id, item_group_status=GroupStatus.SUGGESTED)
            return ItemGroup.objects.get(pk=group_id)
        groups = list(
            ItemGroup.objects.filter(pk__in=[a.item_group_id, b.item_group_id]).annotate(
                n=Count("products"),
                confirmed=Count("products", filter=Q(products__item_group_status=GroupStatus.CONFIRMED)),
            )
        )
        if any(g.confirmed for g in groups):
            return None  # staff own a confirmed group's membership
        keep, drop = sorted(groups, key=lambda g: (-g.n, g.pk))
        Product.objects.filter(item_group=drop).update(item_group=keep)
        drop.delete()
        return keep


def item_group_confirm(*, group: ItemGroup) -> int:
    """Staff: every member still in the group is the same item."""
    return group.products.exclude(item_group_status=GroupStatus.SPLIT).update(item_group_status=GroupStatus.CONFIRMED)


def product_item_group_split(*, product: Product) -> None:
    """Staff: this product is not the same item as the rest of its group. It stays out of
    automatic groups from now on; a group left with one member is dissolved."""
    with transaction.atomic():
        group_id = product.item_group_id
        Product.objects.filter(pk=product.pk).update(item_group=None, item_group_status=GroupStatus.SPLIT)
        product.item_group, product.item_group_status = None, GroupStatus.SPLIT
        if group_id is not None:
            rest = Product.objects.filter(item_group_id=group_id)
            if rest.count() < 2:
                rest.update(item_group=None, item_group_status="")
                ItemGroup.objects.filter(pk=group_id).delete()


def same_item_offers(*, product: Product) -> QuerySet[Product]:
    """The other merchants' offers of the same item that shoppers may see, cheapest first."""
    if product.item_group_id is None:
        return Product.objects.none()
    return (
        Product.objects.filter(item_group_id=product.item_group_id, is_active=True)
        .exclude(pk=product.pk)
        .exclude(item_group_status=GroupStatus.SPLIT)
        .select_related("merchant")
        .order_by("price", "pk")
    )

"""Vectors in the database: embed product images and review photos, score review photos.

One row per (image, embedder version) in ImageVector. Each worker process loads its
embedder once (:func:`embedder_load`); torch is imported lazily so web modules stay light.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Sequence

import numpy as np
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F

from catalog.cleaning import CleaningPolicy, review_image_decide
from catalog.models import ProductImage, ReviewImage
from search.integrity import copy_embedder_version, mirror_vectors, product_images_copy_check
from search.models import EmbedderVersion, ImageVector, faiss_id
from vision.imageio import ImageError, decode_image
from vision.similarity import best_view_score

logger = logging.getLogger(__name__)

# The stored files are decoded at most this size before the embedder's own resize to 224:
# JPEG draft decoding makes it several times faster than full-size decoding.
DECODE_MAX_SIDE = 448
# Images per forward pass on one thread: MobileNetV2 at 224 took 19-24 ms CPU per photo in
# batches of 8 against 28-30 in batches of 32 and 34 in batches of 64 (cache-bound).
INFERENCE_BATCH = 8


@functools.cache
def embedder_load(name: str):
    """The embedder for a name, loaded once per process."""
    import torch

    from vision.embed import make_embedder

    torch.set_num_threads(settings.TORCH_THREADS)
    return make_embedder(name)


def embedder_active() -> EmbedderVersion:
    """The active embedder version; registers the configured default on first use."""
    active = EmbedderVersion.objects.filter(is_active=True).first()
    if active is not None:
        return active
    embedder = embedder_load(settings.VISUALSHOP_EMBEDDER)
    row, _ = EmbedderVersion.objects.get_or_create(
        version=embedder.version, defaults={"name": settings.VISUALSHOP_EMBEDDER, "dim": embedder.dim}
    )
    try:
        with transaction.atomic():
            EmbedderVersion.objects.filter(pk=row.pk).update(is_active=True)
    except IntegrityError:  # another process activated one first
        pass
    return EmbedderVersion.objects.get(is_active=True)


def _load_pixels(images: Sequence[ProductImage | ReviewImage]) -> tuple[list, list]:
    ok, pixels = [], []
    for image in images:
        try:
            with image.file.open("rb") as fh:
                img, _ = decode_image(fh.read(), max_side=DECODE_MAX_SIDE)
        except (ImageError, OSError) as exc:
            # A stored file that went missing or bad: leave it out of the index, keep going.
            logger.warning("cannot embed %s %s: %s", type(image).__name__, image.pk, exc)
            continue
        ok.append(image)
        pixels.append(img)
    return ok, pixels


def _store_vectors(*, embedder: EmbedderVersion, images: Sequence, vectors: np.ndarray, field: str) -> None:
    assert vectors.shape == (len(images), embedder.dim), vectors.shape
    with transaction.atomic():
        ImageVector.objects.filter(embedder=embedder, **{f"{field}__in": [i.pk for i in images]}).delete()
        ImageVector.objects.bulk_create(
            ImageVector(
                embedder=embedder,
                product_id=image.product_id,
                image_sha256=image.sha256,
                vector=vec.astype(np.float32).tobytes(),
                **{field: image},
            )
            for image, vec in zip(images, vectors)
        )
        if embedder.is_active:
            # Only rows whose file is still the one we embedded: a replacement stays dirty.
            type(images[0]).objects.filter(
                pk__in=[i.pk for i in images], vectors__embedder=embedder, vectors__image_sha256=F("sha256")
            ).update(needs_embedding=False)


def product_images_embed(*, image_ids: Sequence[int], embedder: EmbedderVersion | None = None) -> int:
    """Embed product images; returns how many vectors were stored. Idempotent."""
    embedder = embedder or embedder_active()
    images, pixels = _load_pixels(list(ProductImage.objects.filter(pk__in=image_ids)))
    if images:
        vectors = embedder_load(embedder.name).embed(pixels, batch_size=INFERENCE_BATCH)
        if not embedder.is_active:
            _store_vectors(embedder=embedder, images=images, vectors=vectors, field="product_image")
            return len(images)
        # The stolen-image check compares vectors of its own embedder (the base one, which
        # its thresholds belong to) and decides before the search vectors are stored, in
        # their transaction: a copy's vector never reaches the index unflagged.
        check = copy_embedder_version()
        check_model = embedder_load(check.name)
        check_vectors = vectors if check.pk == embedder.pk else check_model.embed(pixels, batch_size=INFERENCE_BATCH)
        mirrored = mirror_vectors(embedder=check_model, pixels=pixels, batch_size=INFERENCE_BATCH)
        with transaction.atomic():
            EmbedderVersion.objects.select_for_update().get(pk=embedder.pk)  # the lock index_sync takes
            product_images_copy_check(
                embedder=check, images=images, pixels=pixels, vectors=check_vectors, mirrored=mirrored
            )
            if check.pk != embedder.pk:
                _store_vectors(embedder=check, images=images, vectors=check_vectors, field="product_image")
            _store_vectors(embedder=embedder, images=images, vectors=vectors, field="product_image")
    return len(images)


def product_views(*, embedder: EmbedderVersion, product_ids: Sequence[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """{product_id: (vectors [m, d], ids [m])}: the product's views for review cleaning.

    A product's views are its own images plus its review photos that were not rejected:
    shoppers' photos of one product in one kind of place resemble each other far more than
    they resemble a studio shot, so a photo of another product stands out against them
    (measured in benchmarks/review_cleaning.py). Product images missing a vector are
    embedded first. Ids are FAISS ids, so a photo can be left out of its own views.
    """
    missing = ProductImage.objects.filter(product_id__in=product_ids).exclude(vectors__embedder=embedder)
    if missing_ids := list(missing.values_list("pk", flat=True)):
        product_images_embed(image_ids=missing_ids, embedder=embedder)
    rows = (
        ImageVector.objects.filter(embedder=embedder, product_id__in=product_ids)
        .exclude(review_image__status=ReviewImage.Status.REJECTED)
        .values_list("product_id", "product_image_id", "review_image_id", "vector")
    )
    views: dict[int, tuple[list, list]] = {}
    for product_id, image_id, review_id, vector in rows:
        vecs, ids = views.setdefault(product_id, ([], []))
        vecs.append(np.frombuffer(bytes(vector), dtype=np.float32))
        ids.append(faiss_id(image_id, review_id))
    return {pid: (np.stack(v), np.asarray(i, dtype=np.int64)) for pid, (v, i) in views.items()}


def review_images_embed(*, image_ids: Sequence[int], embedder: EmbedderVersion | None = None) -> int:
    """Embed review photos and, for the active embedder, score and decide them."""
    embedder = embedder or embedder_active()
    reviews, pixels = _load_pixels(list(ReviewImage.objects.filter(pk__in=image_ids)))
    if not reviews:
        return 0
    vectors = embedder_load(embedder.name).embed(pixels, batch_size=INFERENCE_BATCH)
    # One transaction: a photo is marked embedded (not dirty) only together with its
    # decision, so a worker killed in between leaves it dirty, to be done again, never
    # embedded but pending for good.
    with transaction.atomic():
        _store_vectors(embedder=embedder, images=reviews, vectors=vectors, field="review_image")
        if embedder.is_active:
            policy = cleaning_policy(embedder=embedder)
            views = product_views(embedder=embedder, product_ids={r.product_id for r in reviews})
            for review, vec in zip(reviews, vectors):
                score = review_score(vector=vec, review_id=review.pk, views=views.get(review.product_id))
                review_image_decide(review=review, score=score, policy=policy)
    return len(reviews)


def review_score(*, vector: np.ndarray, review_id: int, views: tuple[np.ndarray, np.ndarray] | None) -> float | None:
    """A review photo's best similarity to its product's views (product_views), itself
    left out; None when there is nothing to compare with (staff decide then)."""
    if views is None:
        return None
    own_vecs, own_ids = views
    query_ids = np.array([faiss_id(None, review_id)])
    best = best_view_score(vector[None, :], own_vecs, query_ids=query_ids, view_ids=own_ids)[0]
    return float(best) if best > -1 else None


def cleaning_policy(*, embedder: EmbedderVersion) -> CleaningPolicy:
    """The settings' thresholds, or the ones carried over to this version when it was
    activated (scores of one photo differ between versions: search/training.py)."""
    policy = CleaningPolicy.from_settings()
    cleaning = embedder.metrics.get("cleaning") or {}
    if "accept_at" in cleaning and "reject_below" in cleaning:
        policy = dataclasses.replace(
            policy, accept_at=float(cleaning["accept_at"]), reject_below=float(cleaning["reject_below"])
        )
    return policy

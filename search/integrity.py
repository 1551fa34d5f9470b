"""Stolen-image check with embeddings (at embedding time) and the read-only check behind
``manage.py check_image``.

The perceptual hash catches resized, recompressed, mirrored and lightly edited copies at
upload (catalog/integrity.py); crops move the hash's DCT grid, so the embedding catches
those. The embedding check runs in :func:`search.embedding.product_images_embed`, in the
transaction that stores the vectors and under the embedder version's row lock (the one
index_sync takes): the flag commits with the vector, so no index sync ever sees the vector
of an unflagged copy, and two batches embedded at once still see each other.

Every product image is compared with every other merchant's product image (hash and
vector). The earlier upload (smaller id) is presumed the original: when an original is
embedded after its copy (out-of-order batches), the copy is flagged then.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from django.conf import settings
from PIL import Image, ImageOps

from catalog.images import image_prepare
from catalog.integrity import (
    CopyMatch,
    copy_match_from_evidence,
    copy_policy,
    product_image_flag,
)
from catalog.models import Merchant, ProductImage
from search.models import EmbedderVersion, ImageVector
from vision.imageio import decode_image
from vision.nearcopy import closest, hashes_to_uint64, matches, mirror_phash_hex

CopyStatus = ProductImage.CopyStatus


def copy_embedder_version() -> EmbedderVersion:
    """The version whose vectors the copy check compares (settings.COPY_EMBEDDER, by
    default the base VISUALSHOP_EMBEDDER), registered on first use. It is the active one
    until a fine-tuned version is rolled out; then product images get a vector of each."""
    from search.embedding import embedder_load

    name = settings.COPY_EMBEDDER or settings.VISUALSHOP_EMBEDDER
    model = embedder_load(name)
    row, _ = EmbedderVersion.objects.get_or_create(version=model.version, defaults={"name": name, "dim": model.dim})
    return row


@dataclass
class _Candidates:
    ids: np.ndarray  # [n] image ids, ascending
    merchants: np.ndarray  # [n]
    status: np.ndarray  # [n] copy_status
    hashes: np.ndarray  # [n] uint64
    vectors: np.ndarray  # [n, d]; zero rows where the image has no vector of this version


def _candidates(*, embedder: EmbedderVersion | None, exclude_merchant_id: int | None = None) -> _Candidates:
    # Every product image with its vector in memory: 81 images take nothing, 50k about
    # 250 MB at d=1280. Beyond that, candidates should come from the live FAISS index.
    qs = ProductImage.objects.all()
    if exclude_merchant_id is not None:
        qs = qs.exclude(product__merchant_id=exclude_merchant_id)
    rows = list(qs.order_by("pk").values_list("pk", "product__merchant_id", "copy_status", "phash"))
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    vectors = np.zeros((len(rows), embedder.dim if embedder else 1), np.float32)
    position = {int(pk): i for i, pk in enumerate(ids)}
    if embedder is not None:
        stored = ImageVector.objects.filter(embedder=embedder, product_image__isnull=False)
        if exclude_merchant_id is not None:
            stored = stored.exclude(product__merchant_id=exclude_merchant_id)
        for image_id, vector in stored.values_list("product_image_id", "vector").iterator(chunk_size=2000):
            if (i := position.get(image_id)) is not None:
                vectors[i] = np.frombuffer(bytes(vector), dtype=np.float32)
    return _Candidates(
        ids=ids,
        merchants=np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows)),
        status=np.array([r[2] for r in rows], dtype=object),
        hashes=hashes_to_uint64(r[3] for r in rows),
        vectors=vectors,
    )


def mirror_vectors(*, embedder, pixels: Sequence[Image.Image], batch_size: int) -> np.ndarray:
    return embedder.embed([ImageOps.mirror(img) for img in pixels], batch_size=batch_size)


def product_images_copy_check(
    *,
    embedder: EmbedderVersion,
    images: Sequence[ProductImage],
    pixels: Sequence[Image.Image],
    vectors: np.ndarray,
    mirrored: np.ndarray,
) -> dict[int, CopyMatch]:
    """Flag the near-copies among these just-embedded images (and any later copy of them
    already stored). Call inside the transaction that stores ``vectors``. Returns
    {flagged image id: match}."""
    assert vectors.shape == mirrored.shape == (len(images), embedder.dim), (vectors.shape, mirrored.shape)
    policy = copy_policy()
    EmbedderVersion.objects.select_for_update().get(pk=embedder.pk)
    cand = _candidates(embedder=embedder)
    by_id = {int(pk): i for i, pk in enumerate(cand.ids)}
    # This batch's own vectors are not stored yet: put them in, so a copy and its original
    # embedded in one batch still meet.
    rows = np.array([by_id[img.pk] for img in images], dtype=np.int64)
    cand.vectors[rows] = vectors
    merchant_of = dict(zip(cand.ids.tolist(), cand.merchants.tolist()))
    flagged: dict[int, CopyMatch] = {}
    for k, image in enumerate(images):
        merchant = merchant_of[image.pk]
        other = cand.merchants != merchant
        query = np.stack([vectors[k], mirrored[k]])
        phash, mphash = int(image.phash, 16), int(mirror_phash_hex(pixels[k]), 16)
        earlier = other & (cand.ids < image.pk)
        if image.copy_status == CopyStatus.NONE and earlier.any():
            evidence = closest(
                phash=phash,
                mirror_phash=mphash,
                vectors=query,
                candidate_hashes=cand.hashes[earlier],
                candidate_vectors=cand.vectors[earlier],
                policy=policy,
            )
            match = copy_match_from_evidence(evidence, ids=cand.ids[earlier], policy=policy)
            if match is not None:
                flagged[image.pk] = match
        later = other & (cand.ids > image.pk) & (cand.status == CopyStatus.NONE)
        if later.any():
            hit = matches(
                phash=phash,
                mirror_phash=mphash,
                vectors=query,
                candidate_hashes=cand.hashes[later],
                candidate_vectors=cand.vectors[later],
                policy=policy,
            )
            for copy_id in cand.ids[later][hit].tolist():
                if copy_id not in flagged:
                    # The same decision as above, with this image as the one candidate.
                    j = by_id[copy_id]
                    evidence = closest(
                        phash=phash,
                        mirror_phash=mphash,
                        vectors=query,
                        candidate_hashes=cand.hashes[j : j + 1],
                        candidate_vectors=cand.vectors[j : j + 1],
                    )
                    flagged[copy_id] = copy_match_from_evidence(evidence, ids=np.array([image.pk]), policy=policy)
    if flagged:
        for copy in ProductImage.objects.filter(pk__in=list(flagged)).select_related("product"):
            product_image_flag(image=copy, match=flagged[copy.pk])
        for image in images:  # the caller's rows: keep them in line with the database
            if image.pk in flagged:
                image.copy_status = CopyStatus.FLAGGED
    return flagged


# --------------------------------------------------------------------------- read-only check


@dataclass(frozen=True)
class CheckResult:
    copy: bool
    reason: str
    match: dict | None  # {sku, merchant, product_id, image_id, title} of the matched image
    hash_distance: int | None  # the closest other merchant's image by each measure
    similarity: float | None
    mirrored: bool
    embedder: str | None
    thresholds: dict

    def as_dict(self) -> dict:
        return asdict(self)


def image_copy_check(*, data: bytes, merchant_name: str | None, embedder_name: str | None = None) -> CheckResult:
    """Would this image be flagged as a copy if ``merchant_name`` added it? Writes nothing.

    The same decision the upload and the embedding step take, against every other
    merchant's product images as they are stored now (an unknown merchant: all images).
    """
    from search.embedding import DECODE_MAX_SIDE, INFERENCE_BATCH, embedder_load

    policy = copy_policy()
    prepared = image_prepare(source=data, name="check")
    merchant = Merchant.objects.filter(name=merchant_name).first() if merchant_name else None
    version = copy_embedder_version() if EmbedderVersion.objects.filter(is_active=True).exists() else None
    query = None
    if version is not None:
        embedder = embedder_load(embedder_name or version.name)
        pixels, _ = decode_image(
            data, max_side=DECODE_MAX_SIDE, max_pixels=settings.IMAGE_MAX_PIXELS, max_bytes=settings.IMAGE_MAX_BYTES
        )
        query = embedder.embed([pixels, ImageOps.mirror(pixels)], batch_size=INFERENCE_BATCH)
    # Nothing embedded yet (no active version): the hash alone.
    cand = _candidates(embedder=version, exclude_merchant_id=merchant.pk if merchant else None)
    inputs = {
        "phash": int(prepared.phash, 16),
        "mirror_phash": int(prepared.mirror_phash, 16),
        "vectors": query,
        "candidate_hashes": cand.hashes,
        "candidate_vectors": cand.vectors if query is not None else None,
    }
    found = copy_match_from_evidence(closest(**inputs, policy=policy), ids=cand.ids, policy=policy)
    evidence = closest(**inputs)  # the closest image by each measure, whatever the thresholds
    match, reason = None, "no other merchant's image is close enough"
    if found is not None:
        original = ProductImage.objects.select_related("product__merchant").get(pk=found.original_id)
        product = original.product
        match = {
            "sku": product.sku,
            "merchant": product.merchant.name,
            "product_id": product.pk,
            "title": product.title,
            "image_id": original.pk,
            "by": found.by,
        }
        reason = found.reason(original)
    return CheckResult(
        copy=found is not None,
        reason=reason,
        match=match,
        hash_distance=evidence.hash_distance,
        similarity=None if evidence.similarity is None else round(evidence.similarity, 4),
        mirrored=found.mirrored if found else False,
        embedder=version.version if version else None,
        thresholds={"max_hash_distance": policy.max_hash_distance, "min_similarity": policy.min_similarity},
    )


# --------------------------------------------------------------------------- backfill


def product_images_copy_scan(*, batch: int = 32, progress=lambda it: it) -> dict[int, CopyMatch]:
    """Check every unflagged product image already embedded (a catalog that predates the
    check, or thresholds just changed), in id order so the earlier image stays the
    original. Uses the stored vectors; only the mirrored ones are computed. The caller
    syncs the index afterwards."""
    from django.db import transaction

    from search.embedding import INFERENCE_BATCH, _load_pixels, embedder_load

    embedder = copy_embedder_version()
    model = embedder_load(embedder.name)
    ids = list(
        ProductImage.objects.filter(copy_status=CopyStatus.NONE, vectors__embedder=embedder)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    flagged: dict[int, CopyMatch] = {}
    for start in progress(range(0, len(ids), batch)):
        chunk = ProductImage.objects.filter(pk__in=ids[start : start + batch], copy_status=CopyStatus.NONE)
        images, pixels = _load_pixels(list(chunk.order_by("pk")))
        if not images:
            continue
        stored = dict(
            ImageVector.objects.filter(embedder=embedder, product_image__in=images).values_list(
                "product_image_id", "vector"
            )
        )
        keep = [k for k, img in enumerate(images) if img.pk in stored]
        images, pixels = [images[k] for k in keep], [pixels[k] for k in keep]
        vectors = np.stack([np.frombuffer(bytes(stored[img.pk]), dtype=np.float32) for img in images])
        mirrored = mirror_vectors(embedder=model, pixels=pixels, batch_size=INFERENCE_BATCH)
        with transaction.atomic():
            flagged |= product_images_copy_check(
                embedder=embedder, images=images, pixels=pixels, vectors=vectors, mirrored=mirrored
            )
    return flagged

"""The live FAISS index: derived from the database, persisted per embedder version.

The index holds the vectors of active products' images and of their accepted review
photos. :func:`index_sync` brings the saved index in line with the database (adds what is
missing, removes what should no longer be found: deactivated or deleted products,
rejected photos) and bumps the version's ``index_generation``; web processes reload when
they see a newer generation (search/live.py). Syncs of one version are serialised by a
row lock, so any number of workers may run them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from catalog.models import ProductImage, ReviewImage
from search.models import REVIEW_ID_OFFSET, EmbedderVersion, ImageVector, faiss_id
from vision.index import IndexCorrupt, VectorIndex, choose_factory

logger = logging.getLogger(__name__)
CHUNK = 20_000


@dataclass(frozen=True)
class SyncResult:
    added: int
    removed: int
    total: int
    rebuilt: bool


def index_path(*, embedder: EmbedderVersion) -> Path:
    return Path(settings.MEDIA_ROOT) / "indexes" / embedder.version / "index.faiss"


def searchable_vectors(*, embedder: EmbedderVersion) -> QuerySet[ImageVector]:
    # A product image flagged as another merchant's copy stays out until staff clear it.
    return ImageVector.objects.filter(embedder=embedder, product__is_active=True).filter(
        Q(product_image__copy_status__in=ProductImage.SEARCHABLE) | Q(review_image__status=ReviewImage.Status.ACCEPTED)
    )


def faiss_ids(rows: Iterable[tuple[int | None, int | None]]) -> np.ndarray:
    return np.fromiter((faiss_id(p, r) for p, r in rows), dtype=np.int64)


def _wanted_ids(embedder: EmbedderVersion) -> np.ndarray:
    return faiss_ids(searchable_vectors(embedder=embedder).values_list("product_image_id", "review_image_id"))


def _vectors_for(embedder: EmbedderVersion, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    product_ids = [int(i) for i in ids if i < REVIEW_ID_OFFSET]
    review_ids = [int(i) - REVIEW_ID_OFFSET for i in ids if i >= REVIEW_ID_OFFSET]
    out_ids, out_vecs = [], []
    for field, chunk_ids in (("product_image_id", product_ids), ("review_image_id", review_ids)):
        for start in range(0, len(chunk_ids), CHUNK):
            rows = ImageVector.objects.filter(
                embedder=embedder, **{f"{field}__in": chunk_ids[start : start + CHUNK]}
            ).values_list("product_image_id", "review_image_id", "vector")
            for p, r, vec in rows:
                out_ids.append(faiss_id(p, r))
                out_vecs.append(np.frombuffer(bytes(vec), dtype=np.float32))
    if not out_vecs:
        return np.zeros((0, embedder.dim), np.float32), np.zeros(0, np.int64)
    return np.stack(out_vecs), np.asarray(out_ids, dtype=np.int64)


def _record(embedder: EmbedderVersion, total: int) -> None:
    EmbedderVersion.objects.filter(pk=embedder.pk).update(
        index_generation=F("index_generation") + 1, index_count=total, index_updated_at=timezone.now()
    )


def index_rebuild(*, embedder: EmbedderVersion, progress: Callable[[Iterable], Iterable] = lambda it: it) -> SyncResult:
    """Build the whole index of a version from the database and save it atomically."""
    with transaction.atomic():
        EmbedderVersion.objects.select_for_update().get(pk=embedder.pk)
        wanted = _wanted_ids(embedder)
        parts = [_vectors_for(embedder, wanted[s : s + CHUNK]) for s in progress(range(0, len(wanted), CHUNK))]
        vectors = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, embedder.dim), np.float32)
        ids = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64)
        index = VectorIndex.build(
            vectors, ids, factory=choose_factory(max(len(ids), 1), embedder.dim), version=embedder.version
        )
        path = index_path(embedder=embedder)
        path.parent.mkdir(parents=True, exist_ok=True)
        index.save(path)
        _record(embedder, index.ntotal)
    logger.info("rebuilt index %s: %d vectors", embedder.version, index.ntotal)
    return SyncResult(added=index.ntotal, removed=0, total=index.ntotal, rebuilt=True)


def index_load(*, embedder: EmbedderVersion) -> VectorIndex:
    """Load the saved index; a missing or corrupt file is rebuilt from the database."""
    path = index_path(embedder=embedder)
    try:
        return VectorIndex.load(path)
    except (FileNotFoundError, IndexCorrupt) as exc:
        logger.warning("index %s unusable (%s): rebuilding from the database", path, exc)
        index_rebuild(embedder=embedder)
        return VectorIndex.load(path)


def index_sync(*, embedder: EmbedderVersion | None = None) -> SyncResult:
    """Add and remove vectors so the saved index matches the database. Idempotent."""
    from search.embedding import embedder_active

    embedder = embedder or embedder_active()
    path = index_path(embedder=embedder)
    with transaction.atomic():
        EmbedderVersion.objects.select_for_update().get(pk=embedder.pk)  # one sync of a version at a time
        try:
            index = VectorIndex.load(path)
        except (FileNotFoundError, IndexCorrupt) as exc:
            logger.warning("index %s unusable (%s): rebuilding", path, exc)
            return index_rebuild(embedder=embedder)
        have = index.ids()
        wanted = _wanted_ids(embedder)
        to_add = np.setdiff1d(wanted, have, assume_unique=True)
        to_remove = np.setdiff1d(have, wanted, assume_unique=True)
        if len(to_remove):
            index.remove(to_remove)
        if len(to_add):
            vectors, ids = _vectors_for(embedder, to_add)
            index.add(vectors, ids)
        if len(to_add) or len(to_remove):
            index.save(path)
            _record(embedder, index.ntotal)
    return SyncResult(added=len(to_add), removed=len(to_remove), total=index.ntotal, rebuilt=False)

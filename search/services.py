"""Search-side writes: embedding, the live index, enqueueing after commit."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from django.conf import settings
from django.db import transaction

from catalog.models import ProductImage, ReviewImage
from search import embedding

logger = logging.getLogger(__name__)

# 32 photos per task: benchmarks/ingest_bench.py gave 44.8 photos/s per process with 32 and
# with 8 (one thread, 348-px photos); 32 means fewer tasks and index syncs, and a killed
# worker redoes about a second of work. Forward passes inside use INFERENCE_BATCH.
EMBED_BATCH = 32
SWEEP_BATCHES = 8  # per sweep run; it re-queues itself while dirty rows remain
_EMBED = {"product": embedding.product_images_embed, "review": embedding.review_images_embed}
_MODELS = {"product": ProductImage, "review": ReviewImage}


def images_embed(*, kind: str, image_ids: Sequence[int]) -> int:
    return _EMBED[kind](image_ids=image_ids)


def embed_sweep() -> tuple[int, bool]:
    """Embed dirty images, product images first (reviews are scored against them)."""
    done = 0
    for kind in ("product", "review"):
        model = _MODELS[kind]
        for _ in range(SWEEP_BATCHES):
            ids = list(
                model.objects.filter(needs_embedding=True).order_by("pk").values_list("pk", flat=True)[:EMBED_BATCH]
            )
            if not ids:
                break
            n = images_embed(kind=kind, image_ids=ids)
            done += n
            if n < len(ids):  # unreadable files: don't pick them up forever
                model.objects.filter(pk__in=ids, needs_embedding=True).update(needs_embedding=False)
    more = (
        ProductImage.objects.filter(needs_embedding=True).exists()
        or ReviewImage.objects.filter(needs_embedding=True).exists()
    )
    return done, more


def index_sync_active():
    from search.indexing import index_sync  # faiss: imported by workers, not by every web module

    return index_sync(embedder=embedding.embedder_active())


def _send(task, *args) -> None:
    try:
        task.delay(*args)
    except Exception as exc:  # broker down: the dirty flag stays set and the sweep catches up
        logger.warning("could not enqueue %s%s (%s); the sweep will pick it up", task.name, args, exc)


_pending = threading.local()


def images_enqueue(*, kind: str, image_ids: Sequence[int]) -> None:
    """Embed these images once the current transaction commits, in batches of EMBED_BATCH.

    Images saved in one transaction (an import of a product with its photos) are
    collected and sent as a few batch tasks rather than one task per image.
    """
    if not settings.SEARCH_AUTO_INDEX:
        return
    pending = getattr(_pending, "ids", None)
    if pending is None:
        pending = _pending.ids = {"product": [], "review": []}
        transaction.on_commit(_flush_pending)
    pending[kind].extend(image_ids)


def _flush_pending() -> None:
    from search.tasks import embed_images_task

    pending, _pending.ids = _pending.ids, None
    for kind in ("product", "review"):  # product images first: reviews are scored against them
        ids = pending[kind]
        for start in range(0, len(ids), EMBED_BATCH):
            _send(embed_images_task, kind, ids[start : start + EMBED_BATCH])


def index_sync_enqueue() -> None:
    from search.tasks import index_sync_task

    if not settings.SEARCH_AUTO_INDEX:
        return
    transaction.on_commit(lambda: _send(index_sync_task))


def query_photos_purge(*, older_than_days: int | None = None, batch: int = 500) -> int:
    """Delete query photos past the retention period; the query rows stay for statistics."""
    from datetime import timedelta

    from django.utils import timezone

    from search.models import SearchQuery

    days = settings.SEARCH_PHOTO_RETENTION_DAYS if older_than_days is None else older_than_days
    cutoff = timezone.now() - timedelta(days=days)
    purged = 0
    while True:
        queries = list(SearchQuery.objects.filter(created_at__lt=cutoff).exclude(photo="")[:batch])
        if not queries:
            return purged
        for query in queries:
            query.photo.delete(save=False)  # storage first: a crash leaves a row to retry, not an orphan file
            query.photo = ""
        SearchQuery.objects.bulk_update(queries, ["photo"])
        purged += len(queries)


def sessions_clear_expired() -> None:
    """Delete expired sessions. Each cookie-less anonymous search starts one (its key is what
    matches that client's clicks to the results it was shown), and Django never deletes
    them by itself: without this the table keeps a row for every such search ever made."""
    from importlib import import_module

    import_module(settings.SESSION_ENGINE).SessionStore.clear_expired()

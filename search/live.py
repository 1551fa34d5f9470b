"""The live index as web processes see it.

Each process keeps the active version's index in memory and checks the database at most
every INDEX_RELOAD_SECONDS for a newer generation; a newer one is loaded beside the old
and swapped in with one assignment, so requests in flight finish on the index they began
with.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from django.conf import settings

from search.models import EmbedderVersion, ImageVector, faiss_id

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveIndex:
    embedder: EmbedderVersion
    generation: int
    index: object  # vision.index.VectorIndex
    image_to_product: dict[int, int]


_lock = threading.Lock()
_current: LiveIndex | None = None
_checked_at = 0.0


def _image_to_product(embedder: EmbedderVersion) -> dict[int, int]:
    rows = ImageVector.objects.filter(embedder=embedder).values_list(
        "product_image_id", "review_image_id", "product_id"
    )
    return {faiss_id(p, r): pid for p, r, pid in rows}


def live_index(*, force: bool = False) -> LiveIndex:
    """The active version's index, reloaded when a newer generation was saved."""
    global _current, _checked_at
    now = time.monotonic()
    current = _current
    if current is not None and not force and now - _checked_at < settings.INDEX_RELOAD_SECONDS:
        return current
    with _lock:
        from search.embedding import embedder_active
        from search.indexing import index_load

        _checked_at = now
        active = embedder_active()
        if current is not None and current.embedder.pk == active.pk and current.generation == active.index_generation:
            return current
        index = index_load(embedder=active)
        active.refresh_from_db()
        _current = LiveIndex(active, active.index_generation, index, _image_to_product(active))
        logger.info("live index %s generation %s: %d vectors", active.version, active.index_generation, index.ntotal)
        return _current


def live_index_reset() -> None:
    """Forget the cached index (tests; after activating another embedder)."""
    global _current, _checked_at
    with _lock:
        _current, _checked_at = None, 0.0

"""The search pipeline of this process: vision's SearchPipeline over the live index."""

from __future__ import annotations

import functools
import threading

from django.conf import settings

from search.embedding import embedder_load
from search.live import LiveIndex, live_index

_lock = threading.Lock()
_cached: tuple[LiveIndex, object] | None = None


@functools.cache
def detector_load(name: str, **options):
    from vision.detect import make_detector

    return make_detector(name, **options)


def search_config():
    from vision.pipeline import SearchConfig

    return SearchConfig(
        detector=settings.SEARCH_DETECTOR,
        nanodet_size=settings.SEARCH_NANODET_SIZE,
        max_side=settings.SEARCH_MAX_SIDE,
        product_images=settings.SEARCH_PRODUCT_IMAGES,
    )


def search_pipeline() -> tuple[object, LiveIndex]:
    """A SearchPipeline bound to the current live index (rebuilt when the index changes),
    and that live index."""
    global _cached
    from vision.pipeline import SearchPipeline

    live = live_index()
    cached = _cached
    if cached is not None and cached[0] is live:
        return cached[1], live
    with _lock:
        config = search_config()
        pipeline = SearchPipeline(
            detector_load(config.detector, **config.detector_options()),
            embedder_load(live.embedder.name),
            live.index,
            live.image_to_product,
            config,
        )
        _cached = (live, pipeline)
        return pipeline, live

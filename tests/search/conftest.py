import pytest

from search.live import live_index_reset


@pytest.fixture
def pixel_engine(settings, auto_index):
    """Ingestion with the raw-pixel embedder: real code paths, no weights, milliseconds."""
    settings.VISUALSHOP_EMBEDDER = "pixels"
    settings.SEARCH_DETECTOR = "none"
    settings.REVIEW_ACCEPT_SCORE = 0.8
    settings.REVIEW_REJECT_SCORE = 0.4
    settings.REVIEW_SPOT_CHECK_FRACTION = 0.0
    settings.INDEX_RELOAD_SECONDS = 0
    live_index_reset()
    yield settings
    live_index_reset()


@pytest.fixture(autouse=True)
def _fresh_throttles():
    """Throttle counters live in the cache; each test starts with none."""
    from django.core.cache import cache

    cache.clear()

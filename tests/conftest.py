import os

import pytest

from tests.services import REDIS_ENV

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(autouse=True)
def _test_settings(settings, tmp_path):
    """Every test writes its files under its own temporary media root, over plain HTTP."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.SECURE_SSL_REDIRECT = False
    # Saving an image would embed it; tests that want that ask for the `auto_index` fixture.
    settings.SEARCH_AUTO_INDEX = False


@pytest.fixture
def auto_index(settings):
    settings.SEARCH_AUTO_INDEX = True


def pytest_collection_modifyitems(config, items):
    if os.environ.get(REDIS_ENV):
        return
    skip = pytest.mark.skip(reason="PostgreSQL/Redis not started for this run (see tests/services.py)")
    for item in items:
        if "services" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _require_weights(request):
    if "weights" not in request.keywords:
        return
    from vision.weights import missing_weights

    missing = missing_weights()
    if missing:
        message = f"pretrained weights missing: {', '.join(missing)} (run `python -m vision.weights`)"
        if CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def redis_url() -> str:
    return os.environ[REDIS_ENV]

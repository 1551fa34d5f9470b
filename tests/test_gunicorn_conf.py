"""gunicorn.conf.py's worker hook, called as gunicorn calls it."""

import gc
import importlib.util
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from search import pipeline as search_pipeline_module
from search.live import live_index_reset

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.django_db


@pytest.fixture
def conf():
    spec = importlib.util.spec_from_file_location("gunicorn_conf", ROOT / "gunicorn.conf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    gc.unfreeze()


@pytest.fixture
def new_worker(settings, monkeypatch):
    """A worker process that has loaded nothing yet (the raw-pixel embedder: no weights)."""
    settings.VISUALSHOP_EMBEDDER = "pixels"
    settings.SEARCH_DETECTOR = "none"
    monkeypatch.setattr(search_pipeline_module, "_cached", None)
    live_index_reset()
    yield SimpleNamespace(log=logging.getLogger("gunicorn.error"))
    live_index_reset()


def test_a_worker_loads_its_models_then_freezes_them(conf, new_worker):
    # When gunicorn starts a worker
    conf.post_worker_init(new_worker)
    # Then its search pipeline is built, and the collector no longer scans it
    pipeline = search_pipeline_module._cached[1]
    assert gc.get_freeze_count() > 0
    assert not any(obj is pipeline for obj in gc.get_objects())


def test_a_worker_starts_even_when_the_models_cannot_load(conf, new_worker, monkeypatch, caplog):
    # Given models that cannot load (say, the weights are missing)
    def missing():
        raise FileNotFoundError("nanodet-coco-416.ts.pt")

    monkeypatch.setattr(search_pipeline_module, "search_pipeline", missing)
    # When gunicorn starts a worker, it says why and starts anyway
    with caplog.at_level(logging.WARNING, logger="gunicorn.error"):
        conf.post_worker_init(new_worker)
    assert "search models not loaded at start" in caplog.text and "nanodet-coco-416.ts.pt" in caplog.text
    assert search_pipeline_module._cached is None
    assert gc.get_freeze_count() > 0

"""Thin Celery tasks: take ids, call one service, log and retry."""

import logging

from celery import shared_task
from django.db import OperationalError

from search import services

logger = logging.getLogger(__name__)
RETRY = {"autoretry_for": (OperationalError,), "retry_backoff": True, "retry_backoff_max": 300, "max_retries": 8}


@shared_task(acks_late=True, **RETRY)
def embed_images_task(kind: str, image_ids: list[int]) -> int:
    n = services.images_embed(kind=kind, image_ids=image_ids)
    if n:
        index_sync_task.delay()
    return n


@shared_task(acks_late=True, **RETRY)
def embed_sweep_task() -> int:
    """Beat: embed a batch of dirty images; re-queue while work remains."""
    n, more = services.embed_sweep()
    if more:
        embed_sweep_task.delay()
    if n:
        index_sync_task.delay()
    return n


@shared_task(acks_late=True, **RETRY)
def index_sync_task() -> dict:
    result = services.index_sync_active()
    logger.info("index sync: %s", result)
    return result.__dict__


@shared_task(acks_late=True, **RETRY)
def query_photos_purge_task() -> int:
    return services.query_photos_purge()


@shared_task(acks_late=True, **RETRY)
def sessions_clear_task() -> None:
    services.sessions_clear_expired()


# Not acks_late: a training run outlasts the broker's visibility timeout, and a redelivered
# run would train again. A run that dies is retried by the next schedule; a version it
# registered stays inactive, and `activate_embedder VERSION` can still finish its rollout.
@shared_task(acks_late=False)
def embedder_learn_task() -> dict:
    from search.training import embedder_learn

    outcome = embedder_learn(activate=True)
    logger.info("embedder learning: %s", outcome)
    return outcome

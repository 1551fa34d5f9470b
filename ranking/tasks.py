"""Thin Celery tasks: call one service, log."""

import logging

from celery import shared_task

from ranking import services

logger = logging.getLogger(__name__)


# acks_late=False: a training run outlives CELERY_BROKER_TRANSPORT_OPTIONS' visibility
# timeout (900 s) on a large log, and a redelivered run would train a second version
# beside the first. A lost run is simply retried by next week's beat.
@shared_task(acks_late=False)
def ranker_train_task(kind: str = "gbdt_lr", activate: str = "auto") -> str | None:
    """Beat, weekly: train on the logs; the version goes live only if it wins offline."""
    try:
        ranker = services.ranker_train(kind=kind, activate=activate)
    except services.RankerTrainingError as exc:
        logger.warning("ranker training skipped: %s", exc)
        return None
    logger.info("ranker %s trained (live: %s): %s", ranker.version, ranker.is_live, ranker.metrics.get("model"))
    return ranker.version

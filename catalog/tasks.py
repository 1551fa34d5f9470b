import logging

from celery import shared_task
from django.db import OperationalError

from catalog.models import ProductImage, ReviewImage
from catalog.services import image_refresh_fingerprint

logger = logging.getLogger(__name__)
_MODELS = {"product": ProductImage, "review": ReviewImage}


@shared_task(acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def image_refresh_fingerprint_task(kind: str, image_id: int) -> bool:
    """Recompute an image's size and hashes from its stored file. Idempotent."""
    image = _MODELS[kind].objects.filter(pk=image_id).first()
    if image is None:
        logger.info("%s image %s is gone; nothing to refresh", kind, image_id)
        return False
    return image_refresh_fingerprint(image=image)

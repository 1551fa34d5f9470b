import pytest

from catalog.models import ProductImage
from catalog.tasks import image_refresh_fingerprint_task
from tests.factories import ProductImageFactory
from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.services, pytest.mark.slow]


def test_a_real_worker_runs_a_task_end_to_end(celery_worker, broker):
    # given an image row whose fingerprints went stale
    image = ProductImageFactory()
    good_phash = image.phash
    ProductImage.objects.filter(pk=image.pk).update(phash="0" * 16, width=1)
    # when the task goes through Redis to a separate worker process
    broker(image_refresh_fingerprint_task, "product", image.pk)
    # then the worker repaired the row in PostgreSQL
    repaired = wait_for(lambda: ProductImage.objects.filter(pk=image.pk, phash=good_phash).first())
    assert repaired.width == image.width
    assert "succeeded" in celery_worker.log.read_text()

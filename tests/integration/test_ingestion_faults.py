"""Ingestion against real PostgreSQL, Redis, worker and beat processes, with faults."""

import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from catalog.models import ProductImage, ReviewImage
from search.indexing import index_path
from search.models import EmbedderVersion, ImageVector
from search.tasks import embed_images_task, index_sync_task
from tests.factories import ProductFactory
from tests.integration.conftest import ROOT, manage, process_env, wait_for
from tests.services import _free_port, _wait_port

pytestmark = [pytest.mark.services, pytest.mark.slow]


def write_catalog(root, *, products: int, photos: int, seed: int = 0):
    """A catalog folder of random pictures in the interchange layout."""
    rng = np.random.default_rng(seed)
    for p in range(products):
        for sub, n in (("catalog", 1), ("reviews", photos)):
            folder = root / sub / f"item-{p}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.fixture
def own_redis(tmp_path):
    """A Redis of this test's own, to stop and start."""

    class Server:
        port = _free_port()
        url = f"redis://127.0.0.1:{port}/0"
        proc = None

        def start(self):
            self.proc = subprocess.Popen(
                [
                    shutil.which("redis-server"),
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(tmp_path),
                ],
                stdout=subprocess.DEVNULL,
            )
            _wait_port(self.port, 10)

        def stop(self):
            if self.proc and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(10)

    server = Server()
    yield server
    server.stop()


def test_uploads_succeed_while_redis_is_down_and_the_sweep_catches_up(workers, own_redis, settings, tmp_path):
    env = process_env(
        redis_url=own_redis.url,
        media_root=settings.MEDIA_ROOT,
        VISUALSHOP_EMBEDDER="pixels",
        VISUALSHOP_SWEEP_SECONDS="2",
        VISUALSHOP_INDEX_SYNC_SECONDS="2",
        CELERY_BEAT_SCHEDULE_FILENAME=str(tmp_path / "beat-schedule"),
    )
    # given Redis is down while a web process takes uploads (an import, here)
    catalog = write_catalog(tmp_path / "shop", products=3, photos=2)
    upload = manage("import_catalog", str(catalog), "--merchant", "Shop", "--no-progress", env=env)
    # then every upload succeeded and waits, dirty, for its vector
    assert upload.returncode == 0, upload.stderr[-3000:]
    assert ProductImage.objects.filter(needs_embedding=True).count() == 3
    assert ReviewImage.objects.filter(needs_embedding=True).count() == 6
    # when Redis is back, with a worker and beat running
    own_redis.start()
    workers.start(env)
    beat = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "visualshop", "beat", "-l", "info"],
        cwd=ROOT,
        env=env,
        stdout=open(tmp_path / "beat.log", "wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        # then the scheduled sweep embeds everything and the index follows
        wait_for(
            lambda: (
                not ProductImage.objects.filter(needs_embedding=True).exists()
                and not ReviewImage.objects.filter(needs_embedding=True).exists()
            ),
            timeout=90,
        )
        wait_for(lambda: EmbedderVersion.objects.filter(is_active=True, index_count__gte=3).exists(), timeout=60)
    finally:
        beat.terminate()
        beat.wait(20)
    assert ImageVector.objects.count() == 9


def test_a_worker_killed_mid_batch_loses_nothing(workers, redis_url, settings, broker, tmp_path):
    env = process_env(
        redis_url=redis_url,
        media_root=settings.MEDIA_ROOT,
        VISUALSHOP_EMBEDDER="mobilenet_v2",
        CELERY_VISIBILITY_TIMEOUT="3",
    )
    # given a batch of photos large enough to take seconds on the real embedder
    catalog = write_catalog(tmp_path / "shop", products=1, photos=120)
    upload = manage(
        "import_catalog",
        str(catalog),
        "--merchant",
        "Shop",
        "--no-progress",
        env={**env, "VISUALSHOP_SEARCH_AUTO_INDEX": "0"},
    )
    assert upload.returncode == 0, upload.stderr[-3000:]
    ids = list(ReviewImage.objects.values_list("pk", flat=True))
    first = workers.start(env, queues="embed")
    broker(embed_images_task, "review", ids)
    # when the worker is killed while it works on the batch
    wait_for(lambda: b"] received" in first.log.read_bytes(), timeout=30, interval=0.05)
    time.sleep(0.5)
    first.kill()
    assert ImageVector.objects.filter(review_image__isnull=False).count() < len(ids)
    # then another worker gets the task back and finishes it
    second = workers.start(env, queues="embed")
    wait_for(lambda: ImageVector.objects.filter(review_image__isnull=False).count() == len(ids), timeout=120)
    assert not ReviewImage.objects.filter(needs_embedding=True).exists()  # committed with the vectors
    wait_for(lambda: b"succeeded" in second.log.read_bytes(), timeout=30)


@pytest.mark.parametrize("damage", ["delete", "corrupt"])
def test_a_damaged_index_is_rebuilt_by_the_worker(workers, redis_url, settings, broker, damage):
    env = process_env(redis_url=redis_url, media_root=settings.MEDIA_ROOT, VISUALSHOP_EMBEDDER="pixels")
    settings.VISUALSHOP_EMBEDDER = "pixels"
    from catalog.services import product_image_add
    from tests.factories import image_bytes

    for i in range(3):
        product_image_add(product=ProductFactory(), source=image_bytes(seed=100 + i))
    workers.start(env)
    broker(embed_images_task, "product", list(ProductImage.objects.values_list("pk", flat=True)))
    active = wait_for(lambda: EmbedderVersion.objects.filter(is_active=True, index_count=3).first(), timeout=60)
    path = index_path(embedder=active)
    # Read before the damage: a sync still queued from the imports may be the one that
    # notices it, before the one sent below.
    generation = EmbedderVersion.objects.get(pk=active.pk).index_generation
    # when the file is damaged
    if damage == "delete":
        path.unlink()
    else:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    broker(index_sync_task)
    # then the worker notices at load and rebuilds it from the database
    wait_for(lambda: EmbedderVersion.objects.get(pk=active.pk).index_generation > generation, timeout=60)
    from vision.index import VectorIndex

    assert VectorIndex.load(path).ntotal == 3


def test_tasks_are_idempotent(workers, redis_url, settings, broker):
    env = process_env(redis_url=redis_url, media_root=settings.MEDIA_ROOT, VISUALSHOP_EMBEDDER="pixels")
    settings.VISUALSHOP_EMBEDDER = "pixels"
    from catalog.services import product_image_add
    from tests.factories import image_bytes

    image, _ = product_image_add(product=ProductFactory(), source=image_bytes(seed=5))
    workers.start(env)
    for _ in range(3):
        broker(embed_images_task, "product", [image.pk])
    wait_for(lambda: ImageVector.objects.filter(product_image=image).exists(), timeout=60)
    time.sleep(2)  # let the duplicates run too
    assert ImageVector.objects.filter(product_image=image).count() == 1

"""Real Celery worker processes on the Redis and PostgreSQL that the test run started."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


class Worker:
    def __init__(self, *, redis_url: str, media_root: Path, log: Path, queues: str = "default"):
        db = connection.settings_dict
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "visualshop.settings",
            # The test database, not the one named in DATABASE_URL.
            "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
            "CELERY_BROKER_URL": redis_url,
            "MEDIA_ROOT": str(media_root),
            "OMP_NUM_THREADS": "1",
        }
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "visualshop", "worker", "--concurrency=1", "-Q", queues,
             "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info"],
            cwd=ROOT, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log.read_text()[-3000:]}")
            if b"ready." in self.log.read_bytes():
                return
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready after {timeout} s: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def celery_worker(redis_url, settings, tmp_path, transactional_db):
    if connection.vendor != "postgresql":
        pytest.fail("worker tests need the PostgreSQL that the test run starts")
    worker = Worker(redis_url=redis_url, media_root=settings.MEDIA_ROOT, log=tmp_path / "worker.log")
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()


@pytest.fixture
def broker(redis_url):
    """Send tasks to Redis for real: this process's Celery app is eager by default."""
    from visualshop.celery import app

    saved = app.conf.task_always_eager
    app.conf.task_always_eager = False
    try:
        with app.connection_for_write(redis_url) as conn:
            yield lambda task, *args: task.apply_async(args=args, connection=conn)
    finally:
        app.conf.task_always_eager = saved


def wait_for(predicate, timeout: float = 60, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(interval)
    raise TimeoutError("condition not met in time")

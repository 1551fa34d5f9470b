"""Real Celery worker processes on the Redis and PostgreSQL that the test run started."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def process_env(*, redis_url: str, media_root: Path, **extra: str) -> dict[str, str]:
    """The environment of a separate platform process (worker or web) on the test database."""
    db = connection.settings_dict
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "visualshop.settings",
        # The test database, not the one named in DATABASE_URL.
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "CELERY_BROKER_URL": redis_url,
        "MEDIA_ROOT": str(media_root),
        "OMP_NUM_THREADS": "1",
        **extra,
    }


def manage(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


class Worker:
    QUEUES = "default,embed,index"

    def __init__(self, *, env: dict[str, str], log: Path, queues: str = QUEUES):
        self.log = log
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "visualshop",
                "worker",
                "--concurrency=1",
                "-Q",
                queues,
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-l",
                "info",
            ],
            cwd=ROOT,
            env=env,
            stdout=open(log, "wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
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

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes: nothing gets to clean up."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def workers(transactional_db, tmp_path):
    """Start workers with ``workers.start(env)``; all are stopped after the test."""
    if connection.vendor != "postgresql":
        pytest.fail("worker tests need the PostgreSQL that the test run starts")
    started: list[Worker] = []

    class Pool:
        def start(self, env: dict[str, str], queues: str = Worker.QUEUES) -> Worker:
            worker = Worker(env=env, log=tmp_path / f"worker{len(started)}.log", queues=queues)
            started.append(worker)
            worker.wait_ready()
            return worker

    yield Pool()
    for worker in started:
        worker.stop()


@pytest.fixture
def celery_worker(workers, redis_url, settings):
    return workers.start(process_env(redis_url=redis_url, media_root=settings.MEDIA_ROOT), queues="default")


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

import os
import subprocess
import sys
from pathlib import Path

from django.conf import settings

ROOT = Path(__file__).resolve().parents[1]


def test_critical_settings_exist():
    for name in [
        "SECRET_KEY",
        "DATABASES",
        "MEDIA_ROOT",
        "ALLOWED_HOSTS",
        "CELERY_BROKER_URL",
        "CELERY_TASK_ACKS_LATE",
        "CELERY_TASK_ALWAYS_EAGER",
        "CELERY_BEAT_SCHEDULE",
    ]:
        assert hasattr(settings, name), name
    assert settings.CELERY_TASK_ACKS_LATE is True


def _run_manage(*args: str, env: dict) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CELERY_", "DATABASE_URL"))}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=clean | env, capture_output=True, text=True
    )


def test_check_deploy_is_clean_with_production_settings():
    result = _run_manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        env={
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": "x" * 30 + "a-long-random-production-secret-key-value",
            "DJANGO_ALLOWED_HOSTS": "shop.example.com",
            "DATABASE_URL": "postgres://u:p@db.example.com:5432/visualshop",
            "CELERY_BROKER_URL": "redis://redis.example.com:6379/0",
        },
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_flags_the_development_key():
    result = _run_manage("check", "--deploy", "--fail-level", "WARNING", env={"DJANGO_DEBUG": "0"})
    assert result.returncode != 0 and "security.W009" in (result.stdout + result.stderr)


def test_environment_selects_the_services():
    result = _run_manage(
        "shell",
        "-v0",
        "-c",
        "from django.conf import settings as s; "
        "print(s.DATABASES['default']['ENGINE'], s.CELERY_TASK_ALWAYS_EAGER, s.MEDIA_ROOT)",
        env={
            "DATABASE_URL": "postgres://u:p@db:5432/x",
            "CELERY_BROKER_URL": "redis://r:6379/0",
            "MEDIA_ROOT": "/srv/media",
        },
    )
    assert result.stdout.strip().splitlines()[-1].split() == ["django.db.backends.postgresql", "False", "/srv/media"], (
        result.stderr
    )


def test_beat_schedules_the_maintenance_tasks():
    from visualshop.celery import app

    app.loader.import_default_modules()  # autodiscovery, as a worker does at start
    tasks = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert tasks == {
        "search.tasks.embed_sweep_task",
        "search.tasks.index_sync_task",
        "search.tasks.query_photos_purge_task",
        "search.tasks.sessions_clear_task",
        "ranking.tasks.ranker_train_task",
        "search.tasks.embedder_learn_task",
    }
    assert tasks <= set(app.tasks)

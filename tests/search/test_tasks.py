from django.db import OperationalError

from search import tasks


def test_embed_task_retries_when_the_database_fails(monkeypatch, settings):
    # given a database that fails once
    calls = []

    def flaky(*, kind, image_ids):
        calls.append(image_ids)
        if len(calls) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return 0

    monkeypatch.setattr(tasks.services, "images_embed", flaky)
    # when the task runs
    result = tasks.embed_images_task.apply(args=("product", [1, 2]), throw=False)
    # then it was retried and succeeded
    assert result.successful() and len(calls) == 2
    assert tasks.embed_images_task.retry_backoff and tasks.embed_images_task.acks_late


def test_tasks_go_to_their_own_queues(settings):
    from visualshop.celery import app

    route = app.amqp.router.route
    assert route({}, "search.tasks.embed_images_task")["queue"].name == "embed"
    assert route({}, "search.tasks.index_sync_task")["queue"].name == "index"
    assert route({}, "catalog.tasks.image_refresh_fingerprint_task")["queue"].name == "default"

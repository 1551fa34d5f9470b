"""gunicorn's settings, read from the working directory: run ``gunicorn visualshop.wsgi``
from the repository root. Command-line flags (--workers, --bind, --timeout) still apply."""

import gc


def post_worker_init(worker):
    """Load this worker's search models before its first request, then freeze what is alive.

    With Django, torch and the models loaded, a worker holds ~480k objects that the garbage
    collector tracks, and each full collection scanned them all: ~170 ms in the load
    benchmark, a pause that landed on whichever search was running. ``gc.freeze()`` moves
    them to the permanent generation, so a full collection scans only what requests left
    since (9-22 ms measured). Loading here also spares the first shoppers the wait.
    """
    from django.db import connections

    try:
        from search.pipeline import search_pipeline

        search_pipeline()
    except Exception:  # e.g. no embedder yet on a new install: the first search loads them
        worker.log.warning("search models not loaded at start", exc_info=True)
    finally:
        connections.close_all()  # requests open their own
    gc.freeze()

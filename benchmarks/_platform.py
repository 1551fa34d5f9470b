"""A throwaway platform for benchmarks: temporary SQLite database and media folder."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets" / "grocery-store"


def setup(**env: str) -> Path:
    """Point Django at a fresh temporary database and media root, migrate, return the folder."""
    sys.path.insert(0, str(ROOT))
    tmp = Path(tempfile.mkdtemp(prefix="visualshop-bench-"))
    os.environ.update(
        DJANGO_SETTINGS_MODULE="visualshop.settings",
        DATABASE_URL=f"sqlite:///{tmp / 'db.sqlite3'}",
        MEDIA_ROOT=str(tmp / "media"),
        VISUALSHOP_SEARCH_AUTO_INDEX="0",
        **env,
    )
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return tmp


def embed_all() -> int:
    """Run the production sweep until nothing is dirty; returns photos embedded."""
    from search import services

    done = 0
    while True:
        n, more = services.embed_sweep()
        done += n
        if not more or n == 0:
            return done

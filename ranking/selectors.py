"""Ranking reads."""

from __future__ import annotations

from django.db.models import QuerySet

from ranking.models import RankerVersion


def ranker_live() -> RankerVersion | None:
    return RankerVersion.objects.filter(is_live=True).first()


def rankers_list() -> QuerySet[RankerVersion]:
    """Versions without their model bytes, newest first."""
    return RankerVersion.objects.defer("model")

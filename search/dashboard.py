"""The staff dashboard: the platform's health on one admin page, each part with a way to act.

Reads only (selectors), except the two buttons that enqueue an index sync or an embed
sweep. Every section degrades on its own: a missing table, an unreachable broker or an
app not installed yet shows "unavailable" instead of breaking the page.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta

from django.conf import settings
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError, transaction
from django.db.models import Count, Q
from django.db.models.functions import TruncDate
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_POST

from catalog.cleaning import spot_check_agreement_by_week
from catalog.models import ItemGroup, ProductImage, ReviewImage
from search.models import Click, EmbedderVersion, ImageVector, Impression, SearchQuery

logger = logging.getLogger(__name__)

QUEUES = ("default", "embed", "index", "train")
DAYS = 30


def may_view(user) -> bool:
    """Platform staff: who may read the search logs may read the dashboard (merchants may not)."""
    return user.is_active and user.is_staff and (user.is_superuser or user.has_perm("search.view_searchquery"))


# --------------------------------------------------------------------------- selectors


def index_status() -> list[dict]:
    """Per embedder version: vectors stored, in the index, last update, and the lag."""
    from search.indexing import searchable_vectors  # faiss: only when the page is opened

    dirty = (
        ProductImage.objects.filter(needs_embedding=True).count()
        + ReviewImage.objects.filter(needs_embedding=True).count()
    )
    counts = dict(ImageVector.objects.values("embedder").annotate(n=Count("pk")).values_list("embedder", "n"))
    rows = []
    for version in EmbedderVersion.objects.order_by("-is_active", "-created_at"):
        searchable = searchable_vectors(embedder=version).count()
        images = ProductImage.objects.count() + ReviewImage.objects.filter(status=ReviewImage.Status.ACCEPTED).count()
        rows.append(
            {
                "version": version,
                "vectors": counts.get(version.pk, 0),
                "searchable": searchable,
                "in_index": version.index_count,
                "generation": version.index_generation,
                "updated_at": version.index_updated_at,
                # Active: images saved but not embedded yet. Others: images this version lacks.
                "not_embedded": dirty if version.is_active else max(images - counts.get(version.pk, 0), 0),
                # The saved index against what it should hold: still to add, still to remove.
                "not_indexed": max(searchable - version.index_count, 0),
                "to_remove": max(version.index_count - searchable, 0),
            }
        )
    return rows


def _flatten(metrics, prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for key, value in (metrics or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out += _flatten(value, f"{name}.")
        elif isinstance(value, float):
            out.append((name, f"{value:.4g}"))
        elif isinstance(value, (int, str, bool)) or value is None:
            out.append((name, str(value)))
        else:
            out.append((name, str(value)[:80]))
    return out


def embedder_versions() -> list[dict]:
    return [
        {"version": v, "metrics": _flatten(v.metrics)} for v in EmbedderVersion.objects.order_by("-created_at")[:10]
    ]


def ranker_versions() -> list[dict] | None:
    """None when the ranking app has no RankerVersion (yet) or its table is missing."""
    from django.apps import apps

    try:
        model = apps.get_model("ranking", "RankerVersion")
    except LookupError:
        return None
    try:
        with transaction.atomic():  # a missing table must not poison the request's transaction
            rows = list(model.objects.order_by("-created_at")[:10])
    except DatabaseError as exc:
        logger.warning("ranker versions unavailable: %s", exc)
        return None
    return [
        {
            "version": getattr(r, "version", str(r)),
            "kind": getattr(r, "kind", ""),
            "is_live": getattr(r, "is_live", False),
            "created_at": getattr(r, "created_at", None),
            "metrics": _flatten(getattr(r, "metrics", {})),
        }
        for r in rows
    ]


def queue_depths(*, timeout: float = 1.0) -> dict:
    """{"available": bool, "queues": {name: depth}, "reason": str}: messages waiting per queue.

    Only a Redis broker is asked (through Celery's own connection, so the priority
    sub-queues kombu keeps are counted as Celery sees them); anything else, or a broker that
    does not answer within ``timeout``, is reported unavailable.
    """
    url = settings.CELERY_BROKER_URL or ""
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return {"available": False, "queues": {}, "reason": f"the broker is not Redis ({url.split(':', 1)[0]}://)"}
    from visualshop.celery import app

    options = {"socket_connect_timeout": timeout, "socket_timeout": timeout, "max_retries": 0}
    try:
        with app.connection_for_read(url, transport_options=options) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)
            channel = conn.default_channel
            depths = {name: int(channel._size(name)) for name in QUEUES}
    except Exception as exc:  # any broker failure: the page still renders
        logger.warning("queue depth unavailable: %s", exc)
        return {"available": False, "queues": {}, "reason": f"the broker did not answer ({type(exc).__name__})"}
    return {"available": True, "queues": depths, "reason": ""}


def search_activity(*, days: int = DAYS, today: date | None = None) -> list[dict]:
    """Daily searches, impressions, clicked impressions and CTR, oldest first, zero-filled.

    Impressions and clicks are bucketed by the day of their search, so a day's CTR is
    what shoppers did with that day's results.
    """
    today = today or timezone.localdate()
    start = today - timedelta(days=days - 1)
    since = timezone.make_aware(timezone.datetime.combine(start, timezone.datetime.min.time()))
    searches = dict(
        SearchQuery.objects.filter(created_at__gte=since)
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(n=Count("pk"))
        .values_list("day", "n")
    )
    shown = {
        r["day"]: r
        for r in Impression.objects.filter(query__created_at__gte=since)
        .annotate(day=TruncDate("query__created_at"))
        .values("day")
        .annotate(n=Count("pk"), clicked=Count("pk", filter=Q(clicks__kind=Click.Kind.CLICK)))
    }
    out = []
    for i in range(days):
        day = start + timedelta(days=i)
        imp = shown.get(day, {})
        n, clicked = imp.get("n", 0), imp.get("clicked", 0)
        out.append({"day": day, "searches": searches.get(day, 0), "impressions": n, "clicks": clicked,
                    "ctr": clicked / n if n else None})  # fmt: skip
    return out


def integrity_status() -> dict:
    return {
        "flagged": ProductImage.objects.filter(copy_status=ProductImage.CopyStatus.FLAGGED).count(),
        "confirmed": ProductImage.objects.filter(copy_status=ProductImage.CopyStatus.CONFIRMED).count(),
        "groups": ItemGroup.objects.count(),
        "groups_to_confirm": ItemGroup.objects.filter(products__item_group_status="suggested").distinct().count(),
    }


# --------------------------------------------------------------------------- charts


def svg_chart(
    values: list[float | None], labels: list[str], *, kind: str, title: str, fmt: str = "{:.0f}"
) -> SafeString:
    """A small server-rendered chart: bars (volumes) or a line (rates). Labels are escaped;
    coordinates are formatted here (format_html would escape numbers into strings)."""
    w, h, pad_l, pad_b, pad_t = 640, 160, 44, 22, 12
    inner_w, inner_h = w - pad_l - 8, h - pad_b - pad_t
    present = [v for v in values if v is not None]
    top = max(present) if present and max(present) > 0 else 1.0
    step = inner_w / max(len(values), 1)
    base = pad_t + inner_h

    def num(x: float) -> str:
        return f"{x:.1f}"

    parts = [
        format_html(
            '<svg class="dash-chart" viewBox="0 0 {} {}" width="100%" role="img" aria-label="{}">', w, h, title
        ),
        format_html("<title>{}</title>", title),
        format_html('<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#999"/>', pad_l, base, w - 8, base),
        format_html(
            '<text x="{}" y="{}" font-size="10" text-anchor="end">{}</text>', pad_l - 4, pad_t + 8, fmt.format(top)
        ),
        format_html('<text x="{}" y="{}" font-size="10" text-anchor="end">0</text>', pad_l - 4, base),
    ]
    points = []
    for i, value in enumerate(values):
        if value is None:
            continue
        x = pad_l + i * step
        y = base - inner_h * (value / top)
        tip = f"{labels[i]}: {fmt.format(value)}"
        if kind == "bar":
            parts.append(
                format_html(
                    '<rect x="{}" y="{}" width="{}" height="{}" fill="#417690"><title>{}</title></rect>',
                    num(x + 1),
                    num(y),
                    num(max(step - 2, 1)),
                    num(base - y),
                    tip,
                )  # fmt: skip
            )
        else:
            points.append(f"{num(x + step / 2)},{num(y)}")
            parts.append(
                format_html(
                    '<circle cx="{}" cy="{}" r="2.5" fill="#b04a1f"><title>{}</title></circle>',
                    num(x + step / 2),
                    num(y),
                    tip,
                )
            )
    if points:
        parts.append(
            format_html('<polyline points="{}" fill="none" stroke="#b04a1f" stroke-width="1.5"/>', " ".join(points))
        )
    for i in range(0, len(labels), 7):
        parts.append(
            format_html('<text x="{}" y="{}" font-size="10">{}</text>', num(pad_l + i * step), h - 6, labels[i])
        )
    parts.append(mark_safe("</svg>"))
    return mark_safe("".join(parts))


# --------------------------------------------------------------------------- views


def _url(name: str, query: str = "") -> str | None:
    try:
        return reverse(name) + query
    except NoReverseMatch:
        return None


@staff_member_required
def dashboard_view(request):
    if not may_view(request.user):
        raise PermissionDenied
    activity = search_activity()
    labels = [d["day"].strftime("%b %d") for d in activity]
    weeks = spot_check_agreement_by_week(weeks=8)
    checked = sum(w["checked"] for w in weeks)
    context = {
        **_admin_context(request),
        "title": "Platform health",
        "index": index_status(),
        "embedders": embedder_versions(),
        "rankers": ranker_versions(),
        "queues": queue_depths(),
        "weeks": weeks,
        "agreement": (sum(w["agreed"] for w in weeks) / checked) if checked else None,
        "spot_todo": ReviewImage.objects.filter(spot_check=True, spot_check_agrees__isnull=True).count(),
        "needs_review": ReviewImage.objects.filter(status=ReviewImage.Status.NEEDS_REVIEW).count(),
        "activity": activity,
        "totals": {
            "searches": sum(d["searches"] for d in activity),
            "impressions": sum(d["impressions"] for d in activity),
            "clicks": sum(d["clicks"] for d in activity),
        },
        "volume_chart": svg_chart([d["searches"] for d in activity], labels, kind="bar", title="searches per day"),
        "ctr_chart": svg_chart(
            [None if d["ctr"] is None else 100 * d["ctr"] for d in activity],
            labels,
            kind="line",
            title="click-through rate per day (%)",
            fmt="{:.1f}%",
        ),  # fmt: skip
        "integrity": integrity_status(),
        "links": {
            "embedders": _url("admin:search_embedderversion_changelist"),
            "rankers": _url("admin:ranking_rankerversion_changelist"),
            "searches": _url("admin:search_searchquery_changelist"),
            "clicks": _url("admin:search_click_changelist"),
            "spot_check": _url("admin:catalog_reviewimage_spot_check"),
            "needs_review": _url("admin:catalog_reviewimage_changelist", "?status__exact=needs_review"),
            "flagged": _url("admin:catalog_productimage_changelist", "?copy_status__exact=flagged"),
            "groups": _url("admin:catalog_itemgroup_changelist"),
            "dirty_products": _url("admin:catalog_productimage_changelist"),
        },
    }
    return TemplateResponse(request, "admin/dashboard.html", context)


def _admin_context(request) -> dict:
    from django.contrib import admin

    return admin.site.each_context(request)


ACTIONS = {"index_sync": "search.tasks.index_sync_task", "embed_sweep": "search.tasks.embed_sweep_task"}


@staff_member_required
@require_POST
def dashboard_act(request):
    """Enqueue an index sync or an embed sweep (the broker down: say so, change nothing)."""
    if not may_view(request.user):
        raise PermissionDenied
    action = request.POST.get("action")
    if action not in ACTIONS:
        messages.error(request, "Unknown action.")
        return redirect("staff_dashboard")
    from search import tasks

    task = getattr(tasks, ACTIONS[action].rsplit(".", 1)[1])
    try:
        task.delay()
    except Exception as exc:  # the broker is down
        messages.error(request, f"Could not enqueue {action}: {exc}")
    else:
        messages.success(request, f"{action.replace('_', ' ')} queued.")
    return redirect("staff_dashboard")

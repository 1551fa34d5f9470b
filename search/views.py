"""Shopper-facing pages of the search app. The JSON endpoints live in apis.py."""

from django.conf import settings
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.csrf import ensure_csrf_cookie

from catalog.models import Category, Merchant

# Results asked for per search: two rows of a desktop grid, a short scroll on a phone.
PHOTO_SEARCH_K = 12


def _category_choices() -> list[tuple[Category, int]]:
    """Top-level categories, each followed by its subcategories: (category, depth)."""
    children: dict[int | None, list[Category]] = {}
    for c in Category.objects.order_by("name"):
        children.setdefault(c.parent_id, []).append(c)
    out = []
    for root in children.get(None, []):
        out.append((root, 0))
        out += [(child, 1) for child in children.get(root.pk, [])]
    return out


@ensure_csrf_cookie  # the page's script posts with X-CSRFToken read from this cookie
def photo_search(request):
    """The upload page: everything after the first paint happens in static/js/photo-search/main.js."""
    return render(
        request,
        "search/upload.html",
        {
            "search_url": reverse("api:search"),
            "click_url": reverse("api:clicks"),
            "k": PHOTO_SEARCH_K,
            "max_side": settings.SEARCH_MAX_SIDE,
            "categories": _category_choices(),
            "merchants": Merchant.objects.order_by("name"),
        },
    )

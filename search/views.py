"""Shopper-facing pages of the search app. The JSON endpoints live in apis.py."""

from django.conf import settings
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie

from catalog.models import Category, Merchant

# Results asked for per search: two rows of a desktop grid, a short scroll on a phone.
PHOTO_SEARCH_K = 12


@ensure_csrf_cookie  # the page's script posts with X-CSRFToken read from this cookie
def photo_search(request):
    """The upload page: everything after the first paint happens in static/js/photo-search.js."""
    return render(
        request,
        "search/upload.html",
        {
            "search_url": "/api/v1/search/",
            "click_url": "/api/v1/clicks/",
            "k": PHOTO_SEARCH_K,
            "max_side": settings.SEARCH_MAX_SIDE,
            "categories": Category.objects.filter(parent__isnull=True).order_by("name"),
            "merchants": Merchant.objects.order_by("name"),
        },
    )

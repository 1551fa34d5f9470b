"""Search API: one view per endpoint; input serializers make every 400."""

from django.core.files.storage import default_storage as storage
from django.db import IntegrityError
from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle
from rest_framework.views import APIView

from search.models import Click, Impression
from search.searching import SearchFilters, photo_search
from search.serializers import (
    ClickInputSerializer,
    ErrorSerializer,
    SearchInputSerializer,
    SearchResponseSerializer,
)
from vision.imageio import ImageError

ERRORS = {400: ErrorSerializer, 429: ErrorSerializer}


class SearchAnonThrottle(AnonRateThrottle):
    scope = "search_anon"


class SearchUserThrottle(UserRateThrottle):
    """Signed-in users and partner tokens. (DRF's UserRateThrottle would also count
    anonymous requests by IP, under the user rate, on top of the anonymous one.)"""

    scope = "search_user"

    def get_cache_key(self, request, view):
        return super().get_cache_key(request, view) if request.user.is_authenticated else None


class ClickThrottle(AnonRateThrottle):
    scope = "clicks"


def _session_key(request) -> str:
    if request.auth is not None:  # token clients have no session
        return ""
    if not request.session.session_key:
        request.session.save()
    return request.session.session_key


class SearchApi(APIView):
    parser_classes = [MultiPartParser, FormParser]
    throttle_classes = [SearchAnonThrottle, SearchUserThrottle]

    @extend_schema(
        operation_id="search_photo",
        summary="Search the catalog with a photo",
        request={"multipart/form-data": SearchInputSerializer},
        responses={200: SearchResponseSerializer, **ERRORS},
    )
    def post(self, request):
        data = SearchInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        filters = SearchFilters(**{k: v.get(k) for k in ("category", "merchant", "min_price", "max_price", "in_stock")})
        try:
            outcome = photo_search(
                image=v["image"].read(),
                box=v.get("box"),
                k=v["k"],
                filters=filters,
                channel="api" if request.auth is not None else "web",
                user=request.user,
                session_key=_session_key(request),
            )
        except ImageError as exc:
            raise ValidationError({"image": [str(exc)]}) from exc
        except ValueError as exc:  # the box does not fit the image
            raise ValidationError({"box": [str(exc)]}) from exc
        boxes = [
            {
                "x1": b.x1,
                "y1": b.y1,
                "x2": b.x2,
                "y2": b.y2,
                "score": b.score,
                "label": b.label,
                "chosen": i == outcome.chosen,
            }
            for i, b in enumerate(outcome.boxes)
        ]
        query = outcome.query
        results = []
        for item in outcome.items:
            p = item.product
            results.append(
                {
                    "position": item.position,
                    "product_id": p.pk,
                    "sku": p.sku,
                    "title": p.title,
                    "price": p.price,
                    "currency": p.currency,
                    "merchant": p.merchant.name,
                    "url": request.build_absolute_uri(reverse("catalog:product_detail", args=[p.pk])),
                    "image_url": request.build_absolute_uri(storage.url(p.first_image)) if p.first_image else None,
                    "score": round(item.score, 4),
                }
            )
        body = {
            "query_id": query.pk,
            "image": {"width": query.width, "height": query.height},
            "boxes": boxes,
            "box": boxes[outcome.chosen],
            "results": results,
            "embedder_version": query.embedder_version,
            "timings_ms": query.timings_ms,
        }
        return Response(SearchResponseSerializer(body).data)


class ClickApi(APIView):
    """Record a click (or add-to-cart) on a result that was shown to this session or client."""

    parser_classes = [JSONParser, FormParser]
    throttle_classes = [ClickThrottle]
    # No session authentication, hence no CSRF check: sendBeacon cannot send the header.
    # The event is only accepted for a product that this very session (or token client)
    # was shown, so there is nothing to forge.
    authentication_classes = [TokenAuthentication]

    @extend_schema(
        operation_id="record_click",
        request=ClickInputSerializer,
        responses={201: None, 200: None, 404: ErrorSerializer, **ERRORS},
    )
    def post(self, request):
        data = ClickInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        impression = (
            Impression.objects.select_related("query")
            .filter(query_id=v["query_id"], product_id=v["product_id"])
            .first()
        )
        if impression is None or not _owns(request, impression.query):
            raise NotFound("no such result was shown to you")
        try:
            _, created = Click.objects.get_or_create(impression=impression, kind=v["kind"])
        except IntegrityError:  # the same event twice at once
            created = False
        return Response(status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


def _owns(request, query) -> bool:
    if request.user.is_authenticated and query.user_id == request.user.pk:
        return True
    return bool(query.session_key) and query.session_key == request.session.session_key

"""Catalog API: public product reads; partner writes scoped to the partner's merchant."""

from django.db.models import Q
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.generics import GenericAPIView
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog.images import ImageError
from catalog.models import Merchant, Product
from catalog.selectors import category_with_descendants, products_visible
from catalog.serializers import (
    PartnerImageSerializer,
    PartnerProductImageSerializer,
    PartnerProductSerializer,
    PartnerProductUpdateSerializer,
    PartnerProductWriteSerializer,
    ProductDetailSerializer,
    ProductFilterSerializer,
    ProductSerializer,
)
from catalog.services import DuplicateSku, product_create, product_deactivate, product_image_add, product_update
from search.serializers import ErrorSerializer

ERRORS = {400: ErrorSerializer, 401: ErrorSerializer, 403: ErrorSerializer, 404: ErrorSerializer}


def _filter(qs, params: dict):
    if (category := params.get("category")) is not None:
        qs = qs.filter(category_id__in=category_with_descendants(category))
    if merchant := params.get("merchant"):
        qs = qs.filter(merchant__slug=merchant)
    if (low := params.get("min_price")) is not None:
        qs = qs.filter(price__gte=low)
    if (high := params.get("max_price")) is not None:
        qs = qs.filter(price__lte=high)
    if params.get("in_stock"):
        qs = qs.filter(stock__gt=0)
    if q := params.get("q"):
        qs = qs.filter(Q(title__icontains=q) | Q(sku__icontains=q) | Q(description__icontains=q))
    return qs


class ProductListApi(GenericAPIView):
    serializer_class = ProductSerializer  # also what OPTIONS describes

    @extend_schema(
        operation_id="products_list",
        parameters=[ProductFilterSerializer],
        responses={200: ProductSerializer(many=True), 400: ErrorSerializer, 404: ErrorSerializer},
    )
    def get(self, request):
        params = ProductFilterSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        page = self.paginate_queryset(_filter(products_visible(), params.validated_data).order_by("title", "pk"))
        return self.get_paginated_response(ProductSerializer(page, many=True, context={"request": request}).data)


class ProductDetailApi(APIView):
    @extend_schema(operation_id="products_detail", responses={200: ProductDetailSerializer, 404: ErrorSerializer})
    def get(self, request, pk: int):
        product = get_object_or_404(products_visible(), pk=pk)
        return Response(ProductDetailSerializer(product, context={"request": request}).data)


class PartnerApi(GenericAPIView):
    """Token-authenticated; every row touched belongs to the partner's own merchant."""

    authentication_classes = [TokenAuthentication]
    permission_classes = [IsAuthenticated]
    serializer_class = PartnerProductSerializer

    def merchant(self) -> Merchant:
        merchants = list(Merchant.objects.filter(staff=self.request.user)[:2])
        if len(merchants) != 1:
            raise PermissionDenied("this token is not tied to exactly one merchant")
        return merchants[0]

    def product(self, sku: str) -> Product:
        return get_object_or_404(
            Product.objects.select_related("merchant", "category").prefetch_related(
                "images__copy_of__product__merchant"
            ),
            merchant=self.merchant(),
            sku=sku,
        )


class PartnerProductListApi(PartnerApi):
    parser_classes = [JSONParser, FormParser, MultiPartParser]

    @extend_schema(operation_id="partner_products_list", responses={200: PartnerProductSerializer(many=True), **ERRORS})
    def get(self, request):
        page = self.paginate_queryset(
            Product.objects.filter(merchant=self.merchant())
            .prefetch_related("images__copy_of__product__merchant")
            .order_by("sku")
        )
        return self.get_paginated_response(PartnerProductSerializer(page, many=True, context={"request": request}).data)

    @extend_schema(
        operation_id="partner_products_create",
        request=PartnerProductWriteSerializer,
        responses={201: PartnerProductSerializer, **ERRORS},
    )
    def post(self, request):
        data = PartnerProductWriteSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            product = product_create(merchant=self.merchant(), **data.validated_data)
        except DuplicateSku as exc:
            raise ValidationError({"sku": [str(exc)]}) from exc
        return Response(
            PartnerProductSerializer(product, context={"request": request}).data, status=status.HTTP_201_CREATED
        )


class PartnerProductDetailApi(PartnerApi):
    parser_classes = [JSONParser, FormParser, MultiPartParser]

    @extend_schema(operation_id="partner_products_detail", responses={200: PartnerProductSerializer, **ERRORS})
    def get(self, request, sku: str):
        return Response(PartnerProductSerializer(self.product(sku), context={"request": request}).data)

    @extend_schema(
        operation_id="partner_products_update",
        request=PartnerProductUpdateSerializer,
        responses={200: PartnerProductSerializer, **ERRORS},
    )
    def patch(self, request, sku: str):
        product = self.product(sku)
        data = PartnerProductUpdateSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        product = product_update(product=product, **data.validated_data)
        return Response(PartnerProductSerializer(product, context={"request": request}).data)

    @extend_schema(
        operation_id="partner_products_deactivate", request=None, responses={200: PartnerProductSerializer, **ERRORS}
    )
    def delete(self, request, sku: str):
        """Deactivate: the product disappears from search and listings; its data stays."""
        product = product_deactivate(product=self.product(sku))
        return Response(PartnerProductSerializer(product, context={"request": request}).data)


class PartnerProductImageApi(PartnerApi):
    parser_classes = [MultiPartParser]

    @extend_schema(
        operation_id="partner_products_add_image",
        request={"multipart/form-data": PartnerImageSerializer},
        responses={201: PartnerProductImageSerializer, 200: PartnerProductImageSerializer, **ERRORS},
        parameters=[OpenApiParameter("sku", str, OpenApiParameter.PATH)],
    )
    def post(self, request, sku: str):
        product = self.product(sku)
        data = PartnerImageSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        upload = data.validated_data["image"]
        try:
            image, created = product_image_add(
                product=product, source=upload.read(), name=upload.name, position=data.validated_data.get("position")
            )
        except ImageError as exc:
            raise ValidationError({"image": [str(exc)]}) from exc
        body = PartnerProductImageSerializer(image, context={"request": request}).data
        return Response(body, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

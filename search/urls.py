from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from catalog import apis as catalog_apis
from search import apis

app_name = "api"
urlpatterns = [
    path("search/", apis.SearchApi.as_view(), name="search"),
    path("clicks/", apis.ClickApi.as_view(), name="clicks"),
    path("products/", catalog_apis.ProductListApi.as_view(), name="products"),
    path("products/<int:pk>/", catalog_apis.ProductDetailApi.as_view(), name="product"),
    path("partner/products/", catalog_apis.PartnerProductListApi.as_view(), name="partner_products"),
    path("partner/products/<str:sku>/", catalog_apis.PartnerProductDetailApi.as_view(), name="partner_product"),
    path(
        "partner/products/<str:sku>/images/",
        catalog_apis.PartnerProductImageApi.as_view(),
        name="partner_product_images",
    ),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
]

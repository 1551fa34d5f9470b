from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import include, path

from search import dashboard

admin.site.site_header = "VisualShop staff"
admin.site.site_title = "VisualShop"
admin.site.index_title = "Catalog, photos and search"

urlpatterns = [
    path("admin/dashboard/", dashboard.dashboard_view, name="staff_dashboard"),
    path("admin/dashboard/act/", dashboard.dashboard_act, name="staff_dashboard_act"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("search.urls")),
    path("", include("search.page_urls")),
    path("", include("catalog.urls")),
]

if settings.DEBUG:
    urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)

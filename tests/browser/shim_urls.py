"""TEMPORARY: the project's routes plus the photo-search page at "/", until visualshop/urls.py has it."""

from django.urls import include, path

from search import views
from visualshop.urls import urlpatterns as project_urlpatterns

urlpatterns = [
    path("", include(([path("", views.photo_search, name="photo_search")], "search"))),
    *project_urlpatterns,
]

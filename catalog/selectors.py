"""Catalog reads."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from catalog.models import Category, Merchant, Product


def merchants_for_user(*, user: AbstractBaseUser) -> QuerySet[Merchant]:
    """The merchants a staff user may manage: all for superusers, else their own."""
    if user.is_superuser:
        return Merchant.objects.all()
    return Merchant.objects.filter(staff=user)


def products_for_user(*, user: AbstractBaseUser) -> QuerySet[Product]:
    qs = Product.objects.select_related("merchant", "category")
    if user.is_superuser:
        return qs
    return qs.filter(merchant__staff=user)


def products_visible() -> QuerySet[Product]:
    """What shoppers may see."""
    return Product.objects.filter(is_active=True).select_related("merchant", "category").prefetch_related("images")


def category_with_descendants(category: Category) -> list[int]:
    """The category's id and those of all categories below it."""
    ids, frontier = [category.pk], [category.pk]
    while frontier:
        frontier = list(Category.objects.filter(parent_id__in=frontier).values_list("pk", flat=True))
        ids += frontier
    return ids

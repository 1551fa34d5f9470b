from django.core.paginator import Paginator
from django.db.models import Q
from django.shortcuts import get_object_or_404, render

from catalog.integrity import same_item_offers
from catalog.models import Category
from catalog.selectors import products_visible


def product_list(request):
    products = products_visible()
    category = None
    if slug := request.GET.get("category"):
        category = Category.objects.filter(slug=slug).first()
        if category is not None:
            products = products.filter(Q(category=category) | Q(category__parent=category))
    if q := request.GET.get("q", "").strip():
        products = products.filter(Q(title__icontains=q) | Q(sku__icontains=q) | Q(description__icontains=q))
    page = Paginator(products, 24).get_page(request.GET.get("page"))
    roots = Category.objects.filter(parent__isnull=True)
    return render(
        request,
        "catalog/product_list.html",
        {"page": page, "categories": roots, "category": category, "q": q},
    )


def product_detail(request, pk: int):
    product = get_object_or_404(products_visible(), pk=pk)
    return render(
        request,
        "catalog/product_detail.html",
        {"product": product, "images": product.images.all(), "offers": same_item_offers(product=product)},
    )

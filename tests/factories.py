"""factory_boy factories for the catalog. Images are real, generated with PIL."""

import io
from decimal import Decimal

import factory
from django.contrib.auth import get_user_model
from PIL import Image

from catalog.models import Category, Merchant, Product, ProductImage, ReviewImage
from catalog.services import product_image_add, review_image_add


def image_bytes(*, size=(64, 48), color=(200, 30, 30), fmt="JPEG", seed: int | None = None, **save_kwargs) -> bytes:
    """A small real image; with a seed, a unique random pattern (so hashes differ)."""
    if seed is None:
        img = Image.new("RGB", size, color)
    else:
        import numpy as np

        rng = np.random.default_rng(seed)
        img = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8), "RGB")
    out = io.BytesIO()
    img.save(out, format=fmt, **save_kwargs)
    return out.getvalue()


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password("pass-word-123")


class MerchantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Merchant
        django_get_or_create = ["name"]

    name = factory.Sequence(lambda n: f"Merchant {n}")
    slug = factory.Sequence(lambda n: f"merchant-{n}")


class CategoryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Category

    name = factory.Sequence(lambda n: f"Category {n}")
    slug = factory.Sequence(lambda n: f"category-{n}")


class ProductFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Product

    merchant = factory.SubFactory(MerchantFactory)
    sku = factory.Sequence(lambda n: f"SKU-{n:05d}")
    title = factory.Sequence(lambda n: f"Product {n}")
    category = factory.SubFactory(CategoryFactory)
    price = Decimal("9.90")
    currency = "EUR"
    stock = 5


class ProductImageFactory(factory.django.DjangoModelFactory):
    """Goes through the real service, so the stored row is what production stores."""

    class Meta:
        model = ProductImage

    product = factory.SubFactory(ProductFactory)
    content = factory.Sequence(lambda n: image_bytes(seed=n))

    @classmethod
    def _create(cls, model_class, *, product, content, **kwargs):
        image, _ = product_image_add(product=product, source=content, name="photo.jpg", **kwargs)
        return image


class ReviewImageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ReviewImage

    product = factory.SubFactory(ProductFactory)
    content = factory.Sequence(lambda n: image_bytes(seed=10_000 + n))

    @classmethod
    def _create(cls, model_class, *, product, content, **kwargs):
        review, _ = review_image_add(product=product, source=content, name="review.jpg")
        for key, value in kwargs.items():
            setattr(review, key, value)
        if kwargs:
            review.save()
        return review

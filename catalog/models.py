import uuid
from decimal import Decimal
from pathlib import PurePath

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.utils.text import slugify


def _random_name(prefix: str, filename: str) -> str:
    # Random names: no collisions, nothing guessable, no user-supplied path segments.
    ext = PurePath(filename).suffix.lower() or ".jpg"
    name = uuid.uuid4().hex
    return f"{prefix}/{name[:2]}/{name}{ext}"


def product_image_path(instance: "ProductImage", filename: str) -> str:
    return _random_name("products", filename)


def review_image_path(instance: "ReviewImage", filename: str) -> str:
    return _random_name("reviews", filename)


class Merchant(models.Model):
    name = models.CharField(max_length=200, unique=True)
    slug = models.SlugField(max_length=200, unique=True)
    staff = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        blank=True,
        related_name="merchants",
        help_text="Staff users who manage this merchant's products in the admin.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        if not self.slug:
            self.slug = slugify(self.name)[:200]
        super().save(*args, **kwargs)


class Category(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=200)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "categories"
        constraints = [
            models.UniqueConstraint(fields=["parent", "slug"], name="category_unique_slug_per_parent"),
            models.UniqueConstraint(
                fields=["slug"], condition=models.Q(parent__isnull=True), name="category_unique_root_slug"
            ),
        ]

    def __str__(self) -> str:
        return self.path

    @property
    def path(self) -> str:
        names, node, seen = [], self, set()
        while node is not None and node.pk not in seen:
            seen.add(node.pk)
            names.append(node.name)
            node = node.parent
        return " / ".join(reversed(names))


class ItemGroup(models.Model):
    """Products of different merchants that are the same item, for price comparison.

    Formed automatically when a merchant's product image is a near-copy of another
    merchant's (search/integrity.py); staff confirm or split members in the admin.
    """

    created_at = models.DateTimeField(auto_now_add=True)
    note = models.CharField(max_length=300, blank=True)

    class Meta:
        verbose_name = "same-item group"

    def __str__(self) -> str:
        return f"same item #{self.pk}"


class Product(models.Model):
    class GroupStatus(models.TextChoices):
        SUGGESTED = "suggested", "Suggested (near-duplicate images)"
        CONFIRMED = "confirmed", "Confirmed by staff"
        SPLIT = "split", "Split by staff: not the same item"

    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="products")
    sku = models.CharField("SKU", max_length=100)
    title = models.CharField(max_length=300)
    description = models.TextField(blank=True)
    category = models.ForeignKey(Category, null=True, blank=True, on_delete=models.SET_NULL, related_name="products")
    price = models.DecimalField(max_digits=12, decimal_places=2, validators=[MinValueValidator(Decimal("0"))])
    currency = models.CharField(max_length=3, default=settings.DEFAULT_CURRENCY, help_text="ISO 4217 code")
    stock = models.PositiveIntegerField(default=0)
    is_active = models.BooleanField(default=True, help_text="Inactive products are hidden from shoppers and search.")
    item_group = models.ForeignKey(
        ItemGroup, null=True, blank=True, on_delete=models.SET_NULL, related_name="products", verbose_name="same item"
    )
    # "split" sticks: automatic grouping leaves a product staff took out alone.
    item_group_status = models.CharField(max_length=16, choices=GroupStatus.choices, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["title", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["merchant", "sku"], name="product_unique_sku_per_merchant"),
            models.CheckConstraint(condition=models.Q(price__gte=0), name="product_price_not_negative"),
        ]
        indexes = [models.Index(fields=["is_active", "category"])]

    def __str__(self) -> str:
        return f"{self.title} ({self.sku})"


class ImageFields(models.Model):
    """What every stored image carries; filled by catalog.images.image_prepare on the way in."""

    width = models.PositiveIntegerField(editable=False)
    height = models.PositiveIntegerField(editable=False)
    sha256 = models.CharField(max_length=64, editable=False, db_index=True, help_text="SHA-256 of the stored file")
    phash = models.CharField(max_length=16, editable=False, db_index=True, help_text="64-bit perceptual hash, hex")
    # Dirty flag (Saleor's search_index_dirty): set when the file is new or replaced, cleared
    # once the active embedder's vector is stored. The sweep task picks up what was missed.
    needs_embedding = models.BooleanField(default=True, db_index=True, editable=False)

    class Meta:
        abstract = True


class ProductImage(ImageFields):
    class CopyStatus(models.TextChoices):
        NONE = "none", "No copy found"
        FLAGGED = "flagged", "Flagged: looks copied from another merchant"
        CONFIRMED = "confirmed", "Staff confirmed: copied"
        CLEARED = "cleared", "Staff cleared: not a copy"

    # Shown in search; a flagged image waits for staff, a confirmed copy stays out.
    SEARCHABLE = (CopyStatus.NONE, CopyStatus.CLEARED)

    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="images")
    file = models.ImageField(upload_to=product_image_path)
    position = models.PositiveSmallIntegerField(default=0, help_text="0 is the main image")
    created_at = models.DateTimeField(auto_now_add=True)
    copy_status = models.CharField(
        max_length=16, choices=CopyStatus.choices, default=CopyStatus.NONE, db_index=True, editable=False
    )
    copy_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False,
        help_text="the other merchant's image this one matched",
    )  # fmt: skip
    copy_reason = models.CharField(max_length=300, blank=True, editable=False)
    copy_hash_distance = models.PositiveSmallIntegerField(null=True, blank=True, editable=False)
    copy_similarity = models.FloatField(null=True, blank=True, editable=False)
    copy_decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    copy_decided_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["product", "position", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["product", "sha256"], name="productimage_unique_content"),
        ]
        permissions = [("decide_copy", "Can confirm or clear a copied-image flag (platform staff)")]

    def __str__(self) -> str:
        return f"{self.product.sku} #{self.position}"

    @property
    def searchable(self) -> bool:
        return self.copy_status in self.SEARCHABLE


class ReviewImage(ImageFields):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        ACCEPTED = "accepted", "Accepted"
        REJECTED = "rejected", "Rejected"
        NEEDS_REVIEW = "needs_review", "Needs staff review"

    class Label(models.TextChoices):
        ACCEPTED = "accepted", "Accepted"
        REJECTED = "rejected", "Rejected"

    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="reviews")
    file = models.ImageField(upload_to=review_image_path)
    uploaded_at = models.DateTimeField(auto_now_add=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    score = models.FloatField(null=True, blank=True, help_text="Automatic score: similarity to the product's images")
    staff_label = models.CharField(max_length=16, choices=Label.choices, blank=True)
    labeled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    labeled_at = models.DateTimeField(null=True, blank=True)
    spot_check = models.BooleanField(
        default=False, db_index=True, help_text="Sampled for a staff spot check of the automatic decision"
    )
    spot_check_agrees = models.BooleanField(null=True, blank=True, help_text="Staff verdict on the automatic decision")
    auto_status = models.CharField(max_length=16, choices=Status.choices, blank=True, editable=False)
    auto_decided_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-uploaded_at", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["product", "sha256"], name="reviewimage_unique_content"),
        ]

    def __str__(self) -> str:
        return f"review {self.pk} of {self.product.sku}"

    @property
    def in_index(self) -> bool:
        return self.status == self.Status.ACCEPTED

import numpy as np
from django.conf import settings
from django.db import models

from catalog.models import Product, ProductImage, ReviewImage

# FAISS ids are image primary keys; review photos live in another table, so their ids are
# shifted past any product-image id this catalog will reach.
REVIEW_ID_OFFSET = 1 << 40


def faiss_id(product_image_id: int | None, review_image_id: int | None) -> int:
    """The index id of a product image or of a review photo (exactly one is given)."""
    return product_image_id if product_image_id else REVIEW_ID_OFFSET + review_image_id


class EmbedderVersion(models.Model):
    """A model that turns images into vectors. Exactly one is active: its index serves search."""

    version = models.CharField(max_length=64, unique=True, help_text="derived from the weights and preprocessing")
    name = models.CharField(max_length=500, help_text="vision.embed.make_embedder name or checkpoint path")
    dim = models.PositiveIntegerField()
    is_active = models.BooleanField(default=False)
    metrics = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # The live index of this version: bumped on every saved change so web processes reload.
    index_generation = models.PositiveIntegerField(default=0)
    index_count = models.PositiveIntegerField(default=0)
    index_updated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_active"], condition=models.Q(is_active=True), name="one_active_embedder"
            ),
        ]

    def __str__(self) -> str:
        return self.version + (" (active)" if self.is_active else "")


class ImageVector(models.Model):
    """One vector per (image, embedder version). The database is the source of truth."""

    embedder = models.ForeignKey(EmbedderVersion, on_delete=models.CASCADE, related_name="vectors")
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="+")
    product_image = models.ForeignKey(
        ProductImage, null=True, blank=True, on_delete=models.CASCADE, related_name="vectors"
    )
    review_image = models.ForeignKey(
        ReviewImage, null=True, blank=True, on_delete=models.CASCADE, related_name="vectors"
    )
    image_sha256 = models.CharField(max_length=64, help_text="content the vector was computed from")
    vector = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(product_image__isnull=True) ^ models.Q(review_image__isnull=True),
                name="vector_of_exactly_one_image",
            ),
            models.UniqueConstraint(fields=["embedder", "product_image"], name="one_vector_per_product_image"),
            models.UniqueConstraint(fields=["embedder", "review_image"], name="one_vector_per_review_image"),
        ]

    @property
    def faiss_id(self) -> int:
        return faiss_id(self.product_image_id, self.review_image_id)

    def as_array(self) -> np.ndarray:
        return np.frombuffer(bytes(self.vector), dtype=np.float32)


def query_photo_path(instance: "SearchQuery", filename: str) -> str:
    import uuid

    name = uuid.uuid4().hex
    return f"queries/{name[:2]}/{name}.jpg"


class SearchQuery(models.Model):
    """One photo search, as the learning loop needs it (and nothing that identifies a place)."""

    class Channel(models.TextChoices):
        WEB = "web", "Upload page"
        API = "api", "Partner API"

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    channel = models.CharField(max_length=8, choices=Channel.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    session_key = models.CharField(max_length=40, blank=True, db_index=True)
    # Re-encoded from pixels: EXIF (GPS included) never reaches the disk. Deleted after
    # SEARCH_PHOTO_RETENTION_DAYS by a scheduled task; the row stays for the statistics.
    photo = models.ImageField(upload_to=query_photo_path, blank=True)
    photo_sha256 = models.CharField(max_length=64, blank=True)
    width = models.PositiveIntegerField(help_text="uploaded image width: boxes are in these pixels")
    height = models.PositiveIntegerField()
    boxes = models.JSONField(default=list, help_text="candidate boxes [{x1,y1,x2,y2,score,label}]")
    chosen_box = models.JSONField(default=dict)
    box_from_user = models.BooleanField(default=False)
    filters = models.JSONField(default=dict, blank=True)
    k = models.PositiveSmallIntegerField()
    embedder_version = models.CharField(max_length=64)
    index_generation = models.PositiveIntegerField()
    ranker_version = models.CharField(max_length=64, blank=True)
    timings_ms = models.JSONField(default=dict)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "search queries"

    def __str__(self) -> str:
        return f"search {self.pk} ({self.created_at:%Y-%m-%d %H:%M})"


class Impression(models.Model):
    query = models.ForeignKey(SearchQuery, on_delete=models.CASCADE, related_name="impressions")
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="+")
    position = models.PositiveSmallIntegerField(help_text="1 = first result")
    score = models.FloatField(help_text="visual similarity")
    rank_score = models.FloatField(null=True, blank=True, help_text="the reranker's score, when one ranked")

    class Meta:
        ordering = ["query", "position"]
        constraints = [
            models.UniqueConstraint(fields=["query", "position"], name="one_product_per_position"),
            models.UniqueConstraint(fields=["query", "product"], name="product_shown_once_per_query"),
        ]


class Click(models.Model):
    class Kind(models.TextChoices):
        CLICK = "click", "Click"
        ADD_TO_CART = "add_to_cart", "Add to cart"

    impression = models.ForeignKey(Impression, on_delete=models.CASCADE, related_name="clicks")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.CLICK)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["impression", "kind"], name="one_event_of_a_kind_per_impression"),
        ]

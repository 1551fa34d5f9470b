import numpy as np
from django.db import models

from catalog.models import Product, ProductImage, ReviewImage

# FAISS ids are image primary keys; review photos live in another table, so their ids are
# shifted past any product-image id this catalog will reach.
REVIEW_ID_OFFSET = 1 << 40


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
        return self.product_image_id if self.product_image_id else REVIEW_ID_OFFSET + self.review_image_id

    def as_array(self) -> np.ndarray:
        return np.frombuffer(bytes(self.vector), dtype=np.float32)

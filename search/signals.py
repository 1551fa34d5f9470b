"""Keep derived data fresh: an image saved dirty is embedded after commit; a change that
alters what search may show (a product (de)activated or deleted, a review relabelled)
triggers an index sync."""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from catalog.models import Product, ProductImage, ReviewImage
from search.services import images_enqueue, index_sync_enqueue


@receiver(post_save, sender=ProductImage)
@receiver(post_save, sender=ReviewImage)
def image_saved(sender, instance, update_fields=None, **kwargs):
    if instance.needs_embedding:
        images_enqueue(kind="product" if sender is ProductImage else "review", image_ids=[instance.pk])
    elif sender is ReviewImage and (update_fields is None or "status" in update_fields):
        index_sync_enqueue()
    elif sender is ProductImage and update_fields and "copy_status" in update_fields:  # a staff decision
        index_sync_enqueue()


@receiver(post_save, sender=Product)
def product_saved(sender, instance, created, update_fields=None, **kwargs):
    if not created and (update_fields is None or "is_active" in update_fields):
        index_sync_enqueue()


@receiver(post_delete, sender=Product)
@receiver(post_delete, sender=ProductImage)
@receiver(post_delete, sender=ReviewImage)
def removed(sender, instance, **kwargs):
    index_sync_enqueue()

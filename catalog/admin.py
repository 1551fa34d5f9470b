from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_POST

from catalog.cleaning import review_image_spot_check, spot_check_agreement_by_week
from catalog.forms import ValidatedImageForm
from catalog.integrity import item_group_confirm, product_image_copy_decide, product_item_group_split
from catalog.models import Category, ItemGroup, Merchant, Product, ProductImage, ReviewImage
from catalog.selectors import merchants_for_user, products_for_user
from catalog.services import review_image_label


def thumbnail(image, size: int = 80) -> str:
    if not image or not image.file:
        return "—"
    return format_html(
        '<img src="{}" alt="" loading="lazy" style="max-width:{}px;max-height:{}px;border-radius:4px">',
        image.file.url,
        size,
        size,
    )


class MerchantScopedAdmin(admin.ModelAdmin):
    """Staff see and edit only their own merchant's rows; superusers see everything."""

    merchant_path = "merchant"

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        if request.user.is_superuser:
            return qs
        return qs.filter(**{f"{self.merchant_path}__staff": request.user})

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "merchant":
            kwargs["queryset"] = merchants_for_user(user=request.user)
        elif db_field.name == "product":
            kwargs["queryset"] = products_for_user(user=request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


@admin.register(Merchant)
class MerchantAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "product_count", "created_at"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    filter_horizontal = ["staff"]

    def get_queryset(self, request):
        return merchants_for_user(user=request.user).annotate(n_products=Count("products"))

    @admin.display(description="products", ordering="n_products")
    def product_count(self, obj):
        return obj.n_products


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):
    list_display = ["path", "parent", "product_count"]
    list_select_related = ["parent", "parent__parent"]
    search_fields = ["name"]
    list_filter = [("parent", admin.RelatedOnlyFieldListFilter)]
    prepopulated_fields = {"slug": ["name"]}

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(n_products=Count("products"))

    @admin.display(description="products", ordering="n_products")
    def product_count(self, obj):
        return obj.n_products


def copy_verdict(image) -> str:
    """The flag as the merchant sees it: status, why, and the other merchant's image it matched."""
    if image is None or not image.pk or image.copy_status == ProductImage.CopyStatus.NONE:
        return "—"
    matched = image.copy_of
    return format_html(
        "<strong>{}</strong><br>{}<br>{}",
        image.get_copy_status_display(),
        image.copy_reason,
        thumbnail(matched, 80) if matched else "",
    )


class ProductImageInline(admin.TabularInline):
    model = ProductImage
    form = ValidatedImageForm
    extra = 1
    fields = ["preview", "file", "position", "width", "height", "phash", "copy"]
    readonly_fields = ["preview", "width", "height", "phash", "copy"]

    @admin.display(description="image")
    def preview(self, obj):
        return thumbnail(obj)

    @admin.display(description="copied image check")
    def copy(self, obj):
        return copy_verdict(obj)


class ReviewImageInline(admin.TabularInline):
    model = ReviewImage
    form = ValidatedImageForm
    extra = 0
    fields = ["preview", "file", "status", "score", "staff_label", "uploaded_at"]
    readonly_fields = ["preview", "status", "score", "staff_label", "uploaded_at"]
    show_change_link = True
    classes = ["collapse"]

    @admin.display(description="photo")
    def preview(self, obj):
        return thumbnail(obj, 60)


@admin.register(Product)
class ProductAdmin(MerchantScopedAdmin):
    list_display = ["preview", "title", "sku", "merchant", "category", "price", "currency", "stock", "is_active"]
    list_display_links = ["preview", "title"]
    list_editable = ["is_active"]
    list_filter = [
        "is_active",
        ("merchant", admin.RelatedOnlyFieldListFilter),
        ("category", admin.RelatedOnlyFieldListFilter),
    ]
    search_fields = ["title", "sku", "description"]
    list_select_related = ["merchant", "category"]
    readonly_fields = ["created_at", "updated_at"]
    autocomplete_fields = ["category"]
    inlines = [ProductImageInline, ReviewImageInline]
    actions = ["activate", "deactivate", "split_from_group"]
    fieldsets = [
        (None, {"fields": ["merchant", "sku", "title", "description", "category"]}),
        ("Offer", {"fields": ["price", "currency", "stock", "is_active"]}),
        ("Same item at other merchants", {"fields": ["same_item"]}),
        ("History", {"fields": ["created_at", "updated_at"], "classes": ["collapse"]}),
    ]

    def get_readonly_fields(self, request, obj=None):
        return [*super().get_readonly_fields(request, obj), "same_item"]

    @admin.display(description="same-item group")
    def same_item(self, obj):
        if obj is None or obj.item_group_id is None:
            return obj.get_item_group_status_display() if obj and obj.item_group_status else "—"
        url = reverse("admin:catalog_itemgroup_change", args=[obj.item_group_id])
        return format_html('<a href="{}">{}</a> ({})', url, obj.item_group, obj.get_item_group_status_display())

    @admin.action(description="Split from their same-item group (not the same item)")
    def split_from_group(self, request, queryset):
        for product in queryset:
            product_item_group_split(product=product)
        self.message_user(request, f"{queryset.count()} products taken out of their groups.", messages.SUCCESS)

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("images")

    @admin.display(description="image")
    def preview(self, obj):
        images = list(obj.images.all())
        return thumbnail(images[0] if images else None, 60)

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        own = merchants_for_user(user=request.user)
        if not request.user.is_superuser and own.count() == 1:
            initial.setdefault("merchant", own.first().pk)
        return initial

    @admin.action(description="Activate selected products")
    def activate(self, request, queryset):
        n = queryset.update(is_active=True)
        self.message_user(request, f"{n} products activated.", messages.SUCCESS)

    @admin.action(description="Deactivate selected products (hide from shoppers)")
    def deactivate(self, request, queryset):
        n = queryset.update(is_active=False)
        self.message_user(request, f"{n} products deactivated.", messages.SUCCESS)


@admin.register(ProductImage)
class ProductImageAdmin(MerchantScopedAdmin):
    """Merchants see their images and any copy flag with the image it matched; staff with
    ``catalog.decide_copy`` confirm a copy (it stays out of search) or clear it (it goes in)."""

    merchant_path = "product__merchant"
    form = ValidatedImageForm
    list_display = ["preview", "product", "position", "width", "height", "copy_status", "matched", "created_at"]
    list_select_related = ["product", "copy_of__product__merchant"]
    search_fields = ["product__title", "product__sku", "sha256", "phash"]
    list_filter = ["copy_status", ("product__merchant", admin.RelatedOnlyFieldListFilter)]
    autocomplete_fields = ["product"]
    readonly_fields = [
        "preview_large", "width", "height", "sha256", "phash", "created_at",
        "copy_status", "copy_reason", "matched_large", "copy_hash_distance", "copy_similarity",
        "copy_decided_by", "copy_decided_at",
    ]  # fmt: skip
    actions = ["confirm_copy", "clear_copy"]

    @admin.display(description="image")
    def preview(self, obj):
        return thumbnail(obj, 60)

    @admin.display(description="preview")
    def preview_large(self, obj):
        return thumbnail(obj, 400)

    @admin.display(description="matched image")
    def matched(self, obj):
        if obj.copy_of_id is None:
            return "—"
        other = obj.copy_of.product
        return format_html("{}<br>{} · {}", thumbnail(obj.copy_of, 60), other.sku, other.merchant.name)

    @admin.display(description="matched image of another merchant")
    def matched_large(self, obj):
        if obj.copy_of_id is None:
            return "—"
        other = obj.copy_of.product
        return format_html(
            "{}<br>SKU {} ({}) sold by {}", thumbnail(obj.copy_of, 400), other.sku, other.title, other.merchant.name
        )

    def get_actions(self, request):
        actions = super().get_actions(request)
        if not request.user.has_perm("catalog.decide_copy"):
            actions.pop("confirm_copy", None)
            actions.pop("clear_copy", None)
        return actions

    def _decide(self, request, queryset, is_copy: bool):
        if not request.user.has_perm("catalog.decide_copy"):
            raise PermissionDenied
        images = list(queryset)
        for image in images:
            product_image_copy_decide(image=image, is_copy=is_copy, user=request.user)
        verdict = "confirmed as copies: they stay out of search" if is_copy else "cleared: they go to search"
        self.message_user(request, f"{len(images)} images {verdict}.", messages.SUCCESS)

    @admin.action(description="Confirm copy (the image stays out of search)")
    def confirm_copy(self, request, queryset):
        self._decide(request, queryset, True)

    @admin.action(description="Clear: not a copy (the image goes to search)")
    def clear_copy(self, request, queryset):
        self._decide(request, queryset, False)


class ItemGroupMemberForm(forms.ModelForm):
    split = forms.BooleanField(required=False, help_text="not the same item: take it out of this group")

    class Meta:
        model = Product
        fields: list[str] = []


class ItemGroupMemberInline(admin.TabularInline):
    model = Product
    form = ItemGroupMemberForm
    fields = ["preview", "merchant", "sku", "title", "price", "currency", "is_active", "item_group_status", "split"]
    readonly_fields = ["preview", "merchant", "sku", "title", "price", "currency", "is_active", "item_group_status"]
    extra = 0
    can_delete = False
    show_change_link = True
    verbose_name = "offer"
    verbose_name_plural = "offers (cheapest first)"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("merchant").prefetch_related("images").order_by("price")

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="image")
    def preview(self, obj):
        images = list(obj.images.all())
        return thumbnail(images[0] if images else None, 60)


@admin.register(ItemGroup)
class ItemGroupAdmin(admin.ModelAdmin):
    """Same item at several merchants, for price comparison: staff confirm or split."""

    list_display = ["__str__", "offers", "status", "created_at"]
    readonly_fields = ["created_at"]
    fields = ["note", "created_at"]
    inlines = [ItemGroupMemberInline]
    actions = ["confirm"]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("products__merchant")

    @admin.display(description="offers, cheapest first")
    def offers(self, obj):
        members = sorted(obj.products.all(), key=lambda p: (p.price, p.pk))
        return format_html_join(
            ", ", "{} ({} {}, {})", ((p.title, p.price, p.currency, p.merchant.name) for p in members)
        )

    @admin.display(description="status")
    def status(self, obj):
        states = {p.item_group_status for p in obj.products.all()}
        return "confirmed" if states == {Product.GroupStatus.CONFIRMED} else "to confirm"

    @admin.action(description="Confirm: these offers are the same item")
    def confirm(self, request, queryset):
        n = sum(item_group_confirm(group=group) for group in queryset)
        self.message_user(request, f"{n} offers confirmed.", messages.SUCCESS)

    def save_formset(self, request, form, formset, change):
        if formset.model is not Product:
            return super().save_formset(request, form, formset, change)
        # Members are only ever split here, never edited: no product row is saved (commit=False
        # only collects what the admin's change message needs).
        formset.save(commit=False)
        for member in formset.forms:
            if member.cleaned_data.get("split") and member.instance.pk:
                product_item_group_split(product=member.instance)
                self.message_user(request, f"{member.instance} taken out of the group.", messages.SUCCESS)


class SpotCheckFilter(admin.SimpleListFilter):
    title = "spot check"
    parameter_name = "spot"

    def lookups(self, request, model_admin):
        return [("todo", "To check"), ("agreed", "Staff agreed"), ("disagreed", "Staff disagreed")]

    def queryset(self, request, queryset):
        value = self.value()
        if value == "todo":
            return queryset.filter(spot_check=True, spot_check_agrees__isnull=True)
        if value in ("agreed", "disagreed"):
            return queryset.filter(spot_check=True, spot_check_agrees=(value == "agreed"))
        return queryset


@admin.register(ReviewImage)
class ReviewImageAdmin(MerchantScopedAdmin):
    merchant_path = "product__merchant"
    form = ValidatedImageForm
    change_list_template = "admin/catalog/reviewimage/change_list.html"
    list_display = ["preview", "product", "status", "score", "auto_status", "staff_label", "labeled_by", "uploaded_at"]
    list_select_related = ["product", "labeled_by"]
    list_filter = [
        SpotCheckFilter,
        "status",
        "auto_status",
        "staff_label",
        ("product__merchant", admin.RelatedOnlyFieldListFilter),
    ]
    search_fields = ["product__title", "product__sku", "sha256"]
    autocomplete_fields = ["product"]
    date_hierarchy = "uploaded_at"
    readonly_fields = [
        "preview_large",
        "product_images",
        "width",
        "height",
        "sha256",
        "phash",
        "score",
        "auto_status",
        "spot_check",
        "spot_check_agrees",
        "staff_label",
        "labeled_by",
        "labeled_at",
        "uploaded_at",
    ]
    actions = ["label_accepted", "label_rejected"]

    @admin.display(description="photo")
    def preview(self, obj):
        return thumbnail(obj, 60)

    @admin.display(description="photo")
    def preview_large(self, obj):
        return thumbnail(obj, 400)

    @admin.display(description="the product's images")
    def product_images(self, obj):
        if not obj.pk:
            return "—"
        return format_html_join(" ", "{}", ((thumbnail(img, 200),) for img in obj.product.images.all()))

    def _label(self, request, queryset, label):
        for review in queryset.select_related("product"):
            review_image_label(review=review, label=label, user=request.user)
        self.message_user(request, f"{queryset.count()} photos labelled {label}.", messages.SUCCESS)

    # ---------------------------------------------------------------- spot checks

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("spot-check/", view(self.spot_check_view), name="catalog_reviewimage_spot_check"),
            path(
                "<int:pk>/spot-check/",
                view(require_POST(self.spot_check_answer)),
                name="catalog_reviewimage_spot_check_answer",
            ),
            *super().get_urls(),
        ]

    def _spot_queue(self, request):
        return self.get_queryset(request).filter(spot_check=True, spot_check_agrees__isnull=True).order_by("pk")

    def spot_check_view(self, request):
        """The next sampled automatic decision, beside the product's images."""
        queue = self._spot_queue(request)
        review = queue.select_related("product").prefetch_related("product__images").first()
        context = {
            **self.admin_site.each_context(request),
            "title": "Spot-check review photos",
            "opts": self.model._meta,
            "review": review,
            "remaining": queue.count(),
            "weeks": spot_check_agreement_by_week(),
        }
        return TemplateResponse(request, "admin/catalog/reviewimage/spot_check.html", context)

    def spot_check_answer(self, request, pk: int):
        review = get_object_or_404(self.get_queryset(request), pk=pk)
        agrees = request.POST.get("verdict") == "right"
        review_image_spot_check(review=review, agrees=agrees, user=request.user)
        return redirect(reverse("admin:catalog_reviewimage_spot_check"))

    def changelist_view(self, request, extra_context=None):
        extra = {"spot_remaining": self._spot_queue(request).count(), "weeks": spot_check_agreement_by_week(weeks=4)}
        return super().changelist_view(request, extra_context={**(extra_context or {}), **extra})

    @admin.action(description="Label as accepted (staff decision)")
    def label_accepted(self, request, queryset):
        self._label(request, queryset, ReviewImage.Label.ACCEPTED)

    @admin.action(description="Label as rejected (staff decision)")
    def label_rejected(self, request, queryset):
        self._label(request, queryset, ReviewImage.Label.REJECTED)

from django.contrib import admin
from django.utils.html import format_html

from search.models import Click, EmbedderVersion, Impression, SearchQuery


class ReadOnlyAdmin(admin.ModelAdmin):
    """Logs and derived data: staff look, the platform writes."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(EmbedderVersion)
class EmbedderVersionAdmin(ReadOnlyAdmin):
    list_display = ["version", "name", "dim", "is_active", "index_count", "index_generation", "index_updated_at"]
    list_filter = ["is_active"]


class ImpressionInline(admin.TabularInline):
    model = Impression
    fields = ["position", "product", "score", "rank_score", "clicked"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    @admin.display(boolean=True)
    def clicked(self, obj):
        return obj.clicks.exists()


@admin.register(SearchQuery)
class SearchQueryAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "preview", "channel", "user", "box_from_user", "embedder_version", "total_ms"]
    list_filter = ["channel", "box_from_user", "embedder_version"]
    date_hierarchy = "created_at"
    inlines = [ImpressionInline]
    readonly_fields = ["preview_large"]

    @admin.display(description="photo")
    def preview(self, obj):
        return format_html('<img src="{}" style="max-height:60px">', obj.photo.url) if obj.photo else "deleted"

    @admin.display(description="photo")
    def preview_large(self, obj):
        return format_html('<img src="{}" style="max-width:400px">', obj.photo.url) if obj.photo else "deleted"

    @admin.display(description="total ms")
    def total_ms(self, obj):
        return obj.timings_ms.get("total")


@admin.register(Click)
class ClickAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "kind", "impression"]
    list_filter = ["kind"]
    list_select_related = ["impression__product", "impression__query"]

from django.contrib import admin, messages
from django.utils.html import format_html

from ranking.models import RankerVersion
from ranking.services import ranker_back_to_visual_order, ranker_make_live


@admin.register(RankerVersion)
class RankerVersionAdmin(admin.ModelAdmin):
    """Trained rankers with their offline metrics; staff choose the live one."""

    list_display = ["version", "kind", "is_live", "model_ndcg", "visual_ndcg", "model_auc", "test_size", "created_at"]
    list_filter = ["kind", "is_live"]
    readonly_fields = ["version", "kind", "is_live", "features", "params", "metrics", "created_at"]
    exclude = ["model"]
    actions = ["make_live", "back_to_visual_order"]

    def get_queryset(self, request):
        return super().get_queryset(request).defer("model")

    def has_add_permission(self, request):
        return False

    def _metric(self, obj, part, name):
        value = (obj.metrics.get(part) or {}).get(name)
        return "-" if value is None else f"{value:.4f}"

    @admin.display(description="NDCG@10")
    def model_ndcg(self, obj):
        return self._metric(obj, "model", "ndcg@10")

    @admin.display(description="visual NDCG@10")
    def visual_ndcg(self, obj):
        return self._metric(obj, "visual_order", "ndcg@10")

    @admin.display(description="AUC")
    def model_auc(self, obj):
        return self._metric(obj, "model", "auc")

    @admin.display(description="test searches")
    def test_size(self, obj):
        test = obj.metrics.get("test") or {}
        return format_html("{} ({} clicked)", test.get("queries", "-"), test.get("queries_with_click", "-"))

    @admin.action(description="Make live", permissions=["live"])
    def make_live(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Choose exactly one version to make live.", messages.ERROR)
            return
        ranker = ranker_make_live(ranker=queryset.get())
        self.message_user(request, f"{ranker.version} is live.", messages.SUCCESS)

    @admin.action(description="Back to visual order (no ranker live)", permissions=["live"])
    def back_to_visual_order(self, request, queryset):
        n = ranker_back_to_visual_order()
        self.message_user(request, "Search uses the visual order." if n else "No ranker was live.", messages.SUCCESS)

    def has_live_permission(self, request):
        return (
            request.user.is_active and request.user.is_staff and request.user.has_perm("ranking.change_rankerversion")
        )

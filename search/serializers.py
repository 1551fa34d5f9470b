from django.conf import settings
from rest_framework import serializers

from catalog.models import Category, Merchant
from search.models import Click
from visualshop.api import MAX_ID, PrimaryKeyField, StrictSerializer


class SearchFiltersSerializer(StrictSerializer):
    category = PrimaryKeyField(
        queryset=Category.objects.all(), required=False, help_text="category id; its subcategories are included"
    )
    merchant = serializers.SlugRelatedField(slug_field="slug", queryset=Merchant.objects.all(), required=False)
    min_price = serializers.DecimalField(max_digits=12, decimal_places=2, min_value=0, required=False)
    max_price = serializers.DecimalField(max_digits=12, decimal_places=2, min_value=0, required=False)
    in_stock = serializers.BooleanField(required=False, allow_null=True, default=None)

    def validate(self, attrs):
        low, high = attrs.get("min_price"), attrs.get("max_price")
        if low is not None and high is not None and low > high:
            raise serializers.ValidationError({"max_price": ["must not be below min_price"]})
        return attrs


class SearchInputSerializer(SearchFiltersSerializer):
    image = serializers.FileField(help_text="the photo: JPEG, PNG, WebP, GIF, BMP or TIFF")
    box = serializers.CharField(
        required=False,
        help_text="x1,y1,x2,y2 in pixels of the uploaded image; skips detection and searches this region",
    )
    k = serializers.IntegerField(min_value=1, max_value=50, default=12, help_text="products to return")

    def validate_image(self, upload):
        if upload.size == 0:
            raise serializers.ValidationError("the file is empty")
        if upload.size > settings.IMAGE_MAX_BYTES:
            raise serializers.ValidationError(
                f"the file is {upload.size / 1e6:.1f} MB; the limit is {settings.IMAGE_MAX_BYTES / 1e6:.0f} MB"
            )
        return upload

    def validate_box(self, value):
        parts = value.split(",")
        try:
            box = tuple(float(p) for p in parts)
        except ValueError:
            box = ()
        if len(box) != 4 or any(v != v or v in (float("inf"), float("-inf")) for v in box):
            raise serializers.ValidationError("expected four numbers: x1,y1,x2,y2")
        x1, y1, x2, y2 = box
        if x2 <= x1 or y2 <= y1:
            raise serializers.ValidationError("x2 must be greater than x1 and y2 greater than y1")
        return box


class BoxSerializer(serializers.Serializer):
    x1 = serializers.FloatField()
    y1 = serializers.FloatField()
    x2 = serializers.FloatField()
    y2 = serializers.FloatField()
    score = serializers.FloatField()
    label = serializers.CharField(
        help_text='detector class; "image" is the whole photo, "user" a box given by the caller'
    )
    chosen = serializers.BooleanField()


class SearchResultSerializer(serializers.Serializer):
    position = serializers.IntegerField()
    product_id = serializers.IntegerField()
    sku = serializers.CharField()
    title = serializers.CharField()
    price = serializers.DecimalField(max_digits=12, decimal_places=2)
    currency = serializers.CharField()
    merchant = serializers.CharField()
    url = serializers.URLField()
    image_url = serializers.URLField(allow_null=True)
    score = serializers.FloatField(help_text="visual similarity, cosine: the mean of the product's best few images")


class ImageSizeSerializer(serializers.Serializer):
    width = serializers.IntegerField()
    height = serializers.IntegerField()


class SearchResponseSerializer(serializers.Serializer):
    query_id = serializers.IntegerField()
    image = ImageSizeSerializer()
    boxes = BoxSerializer(many=True)
    box = BoxSerializer()
    results = SearchResultSerializer(many=True)
    embedder_version = serializers.CharField()
    timings_ms = serializers.DictField(child=serializers.FloatField())


class ClickInputSerializer(StrictSerializer):
    query_id = serializers.IntegerField(min_value=1, max_value=MAX_ID)
    product_id = serializers.IntegerField(min_value=1, max_value=MAX_ID)
    position = serializers.IntegerField(
        min_value=1, max_value=1000, required=False, help_text="ignored: the logged position is used"
    )
    kind = serializers.ChoiceField(choices=Click.Kind.choices, default=Click.Kind.CLICK)


class ErrorBodySerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    fields = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))


class ErrorSerializer(serializers.Serializer):
    error = ErrorBodySerializer()

from rest_framework import serializers

from catalog.models import Category, Product, ProductImage
from visualshop.api import MAX_ID, PrimaryKeyField, StrictSerializer


class ProductImageSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()

    class Meta:
        model = ProductImage
        fields = ["id", "url", "position", "width", "height"]

    def get_url(self, obj) -> str:
        request = self.context.get("request")
        return request.build_absolute_uri(obj.file.url) if request else obj.file.url


class ProductSerializer(serializers.ModelSerializer):
    merchant = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    category = PrimaryKeyField(read_only=True, allow_null=True)
    category_path = serializers.SerializerMethodField()
    images = ProductImageSerializer(many=True, read_only=True)

    class Meta:
        model = Product
        fields = [
            "id", "sku", "title", "description", "merchant", "category", "category_path",
            "price", "currency", "stock", "is_active", "created_at", "updated_at", "images",
        ]  # fmt: skip

    def get_category_path(self, obj) -> str | None:
        return obj.category.path if obj.category_id else None


class ProductFilterSerializer(StrictSerializer):
    category = PrimaryKeyField(queryset=Category.objects.all(), required=False)
    merchant = serializers.SlugField(required=False)
    min_price = serializers.DecimalField(max_digits=12, decimal_places=2, min_value=0, required=False)
    max_price = serializers.DecimalField(max_digits=12, decimal_places=2, min_value=0, required=False)
    in_stock = serializers.BooleanField(required=False, allow_null=True, default=None)
    q = serializers.CharField(required=False, max_length=200)
    page = serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID)


class PartnerProductWriteSerializer(StrictSerializer):
    sku = serializers.RegexField(
        r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$", help_text="letters, digits, '.', '_' and '-'; unique per merchant"
    )
    title = serializers.CharField(max_length=300)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    category = PrimaryKeyField(queryset=Category.objects.all(), required=False, allow_null=True)
    price = serializers.DecimalField(max_digits=12, decimal_places=2, min_value=0)
    currency = serializers.RegexField(r"^[A-Z]{3}$", required=False, help_text="ISO 4217, e.g. EUR")
    stock = serializers.IntegerField(min_value=0, required=False)
    is_active = serializers.BooleanField(required=False)


class PartnerProductUpdateSerializer(PartnerProductWriteSerializer):
    sku = None
    title = serializers.CharField(max_length=300, required=False)
    price = serializers.DecimalField(max_digits=12, decimal_places=2, min_value=0, required=False)
    description = serializers.CharField(required=False, allow_blank=True)


class PartnerImageSerializer(StrictSerializer):
    image = serializers.FileField()
    position = serializers.IntegerField(min_value=0, max_value=1000, required=False)

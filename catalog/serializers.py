from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from catalog.integrity import same_item_offers
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


class OfferSerializer(serializers.ModelSerializer):
    """Another merchant's offer of the same item."""

    merchant = serializers.CharField(source="merchant.name", read_only=True)
    merchant_slug = serializers.CharField(source="merchant.slug", read_only=True)

    class Meta:
        model = Product
        fields = ["id", "sku", "title", "merchant", "merchant_slug", "price", "currency", "stock"]


class ProductDetailSerializer(ProductSerializer):
    also_sold_by = serializers.SerializerMethodField(help_text="the same item at other merchants, cheapest first")

    class Meta(ProductSerializer.Meta):
        fields = [*ProductSerializer.Meta.fields, "also_sold_by"]

    @extend_schema_field(OfferSerializer(many=True))
    def get_also_sold_by(self, obj) -> list[dict]:
        return OfferSerializer(same_item_offers(product=obj), many=True).data


class MatchedImageSerializer(serializers.Serializer):
    sku = serializers.CharField()
    title = serializers.CharField()
    merchant = serializers.CharField()
    image_id = serializers.IntegerField()


class PartnerProductImageSerializer(ProductImageSerializer):
    """What the merchant sees of its own image: whether search shows it, and if not, why."""

    searchable = serializers.BooleanField(read_only=True, help_text="false while flagged or confirmed as a copy")
    matched = serializers.SerializerMethodField(help_text="the other merchant's image it looks copied from")

    class Meta(ProductImageSerializer.Meta):
        fields = [*ProductImageSerializer.Meta.fields, "copy_status", "copy_reason", "searchable", "matched"]

    @extend_schema_field(MatchedImageSerializer(allow_null=True))
    def get_matched(self, obj) -> dict | None:
        if obj.copy_of_id is None:
            return None
        product = obj.copy_of.product
        return {
            "sku": product.sku,
            "title": product.title,
            "merchant": product.merchant.name,
            "image_id": obj.copy_of_id,
        }


class PartnerProductSerializer(ProductSerializer):
    images = PartnerProductImageSerializer(many=True, read_only=True)


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

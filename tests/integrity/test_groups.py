"""Same item at several merchants: groups form from near-copies, show offers cheapest first,
and staff confirm or split them."""

from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from PIL import ImageOps

from catalog.integrity import item_group_confirm, item_group_link, product_item_group_split, same_item_offers
from catalog.models import ItemGroup, Product, ProductImage
from catalog.services import product_image_add
from tests.factories import MerchantFactory, ProductFactory, UserFactory
from tests.integrity.conftest import encode, scene

pytestmark = pytest.mark.django_db
Group = Product.GroupStatus


def offer(merchant: str, price: str, seed: int | None = 1, mirror: bool = False) -> Product:
    product = ProductFactory(merchant=MerchantFactory(name=merchant), price=Decimal(price), title=f"Milk at {merchant}")
    if seed is not None:
        img = scene(seed)
        product_image_add(product=product, source=encode(ImageOps.mirror(img) if mirror else img))
    return product


@pytest.fixture
def milk():
    """The same milk photo at three merchants (one mirrored it), and an unrelated product."""
    return {
        "a": offer("Shop A", "12.00"),
        "b": offer("Shop B", "9.50", mirror=True),
        "c": offer("Shop C", "15.00"),
        "other": offer("Shop D", "1.00", seed=7),
    }


def fresh(p: Product) -> Product:
    return Product.objects.get(pk=p.pk)


def test_near_copies_across_merchants_form_one_group(milk):
    a, b, c, other = (fresh(milk[k]) for k in ("a", "b", "c", "other"))
    assert a.item_group_id is not None and a.item_group_id == b.item_group_id == c.item_group_id
    assert {a.item_group_status, b.item_group_status, c.item_group_status} == {Group.SUGGESTED}
    assert other.item_group_id is None
    assert ItemGroup.objects.count() == 1


def test_offers_are_the_other_merchants_cheapest_first(milk):
    offers = list(same_item_offers(product=fresh(milk["a"])))
    assert [(o.merchant.name, o.price) for o in offers] == [("Shop B", Decimal("9.50")), ("Shop C", Decimal("15.00"))]


def test_inactive_offers_are_not_shown(milk):
    Product.objects.filter(pk=milk["b"].pk).update(is_active=False)
    assert [o.merchant.name for o in same_item_offers(product=fresh(milk["a"]))] == ["Shop C"]


def test_product_api_and_page_show_also_sold_by_cheapest_first(client, milk):
    body = client.get(f"/api/v1/products/{milk['c'].pk}/").json()
    assert [(o["merchant"], o["price"]) for o in body["also_sold_by"]] == [("Shop B", "9.50"), ("Shop A", "12.00")]
    html = client.get(f"/products/{milk['c'].pk}/").content.decode()
    assert "Also sold by" in html and html.index("Shop B") < html.index("Shop A")
    assert client.get(f"/api/v1/products/{milk['other'].pk}/").json()["also_sold_by"] == []


def test_split_takes_a_product_out_for_good(milk):
    product_item_group_split(product=fresh(milk["c"]))
    c = fresh(milk["c"])
    assert c.item_group_id is None and c.item_group_status == Group.SPLIT
    assert [o.merchant.name for o in same_item_offers(product=fresh(milk["a"]))] == ["Shop B"]
    # a later near-copy does not pull it back in
    assert item_group_link(product=c, other=fresh(milk["a"])) is None
    assert fresh(milk["c"]).item_group_id is None


def test_a_group_left_with_one_member_is_dissolved(milk):
    product_item_group_split(product=fresh(milk["b"]))
    product_item_group_split(product=fresh(milk["c"]))
    assert fresh(milk["a"]).item_group_id is None and not ItemGroup.objects.exists()


def test_confirm_marks_members_confirmed_and_closes_the_group_to_merges(milk):
    group = fresh(milk["a"]).item_group
    assert item_group_confirm(group=group) == 3
    assert set(group.products.values_list("item_group_status", flat=True)) == {Group.CONFIRMED}
    # another group meeting a confirmed one is left for staff
    x, y = offer("Shop X", "3.00", seed=None), offer("Shop Y", "4.00", seed=None)
    other_group = item_group_link(product=x, other=y)
    assert item_group_link(product=fresh(x), other=fresh(milk["a"])) is None
    assert fresh(x).item_group_id == other_group.pk


def test_staff_confirm_and_split_in_the_admin(client, milk):
    staff = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(staff)
    group = fresh(milk["a"]).item_group
    page = client.get(f"/admin/catalog/itemgroup/{group.pk}/change/")
    assert page.status_code == 200 and "Shop B" in page.content.decode()
    client.post("/admin/catalog/itemgroup/", {"action": "confirm", "_selected_action": [group.pk]})
    assert fresh(milk["a"]).item_group_status == Group.CONFIRMED
    client.post("/admin/catalog/product/", {"action": "split_from_group", "_selected_action": [milk["c"].pk]})
    assert fresh(milk["c"]).item_group_status == Group.SPLIT


def test_split_from_the_group_page_inline(client, milk):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    group = fresh(milk["a"]).item_group
    members = list(group.products.order_by("price"))  # the inline's order
    prefix = "products"
    data = {
        "note": "",
        f"{prefix}-TOTAL_FORMS": len(members),
        f"{prefix}-INITIAL_FORMS": len(members),
        f"{prefix}-MIN_NUM_FORMS": 0,
        f"{prefix}-MAX_NUM_FORMS": 1000,
    }
    for i, member in enumerate(members):
        data[f"{prefix}-{i}-id"] = member.pk
        data[f"{prefix}-{i}-item_group"] = group.pk
        if member.pk == milk["b"].pk:
            data[f"{prefix}-{i}-split"] = "on"
    page = client.post(f"/admin/catalog/itemgroup/{group.pk}/change/", data)
    assert page.status_code == 302, page.content.decode()[:2000]
    assert fresh(milk["b"]).item_group_status == Group.SPLIT
    assert fresh(milk["a"]).item_group_id == group.pk


# --------------------------------------------------------------------------- the merchant's view of a flag


def test_merchant_sees_the_flag_and_the_matched_product_but_cannot_clear_it(client, milk):
    copy = ProductImage.objects.get(product=milk["b"])
    assert copy.copy_status == ProductImage.CopyStatus.FLAGGED
    merchant_staff = UserFactory(is_staff=True)
    merchant_staff.user_permissions.set(
        Permission.objects.filter(content_type__app_label="catalog").exclude(codename="decide_copy")
    )
    milk["b"].merchant.staff.add(merchant_staff)
    client.force_login(merchant_staff)
    html = client.get(f"/admin/catalog/productimage/{copy.pk}/change/").content.decode()
    assert "Flagged" in html and milk["a"].sku in html and "Shop A" in html
    listing = client.get("/admin/catalog/productimage/").content.decode()
    assert "clear_copy" not in listing
    client.post("/admin/catalog/productimage/", {"action": "clear_copy", "_selected_action": [copy.pk]})
    copy.refresh_from_db()
    assert copy.copy_status == ProductImage.CopyStatus.FLAGGED


def test_platform_staff_clear_a_flag_in_the_admin(client, milk):
    copy = ProductImage.objects.get(product=milk["b"])
    staff = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(staff)
    client.post("/admin/catalog/productimage/", {"action": "clear_copy", "_selected_action": [copy.pk]})
    copy.refresh_from_db()
    assert copy.copy_status == ProductImage.CopyStatus.CLEARED and copy.copy_decided_by == staff


def test_partner_api_image_response_shows_status_and_reason(client, milk):
    from rest_framework.authtoken.models import Token

    partner = UserFactory()
    milk["b"].merchant.staff.add(partner)
    token = Token.objects.create(user=partner)
    body = client.get(f"/api/v1/partner/products/{milk['b'].sku}/", HTTP_AUTHORIZATION=f"Token {token.key}").json()
    image = body["images"][0]
    assert image["copy_status"] == "flagged" and image["searchable"] is False
    assert image["matched"]["sku"] == milk["a"].sku and image["matched"]["merchant"] == "Shop A"
    assert "Shop A" in image["copy_reason"]
    # and uploading another copy answers with the flag straight away
    from io import BytesIO

    upload = BytesIO(encode(scene(1), quality=35))
    upload.name = "again.jpg"
    answer = client.post(
        f"/api/v1/partner/products/{milk['b'].sku}/images/", {"image": upload}, HTTP_AUTHORIZATION=f"Token {token.key}"
    )
    assert answer.status_code == 201 and answer.json()["copy_status"] == "flagged"

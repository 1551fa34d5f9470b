"""The shopper's photo-search page in Chromium, against the live server.

The end-to-end test goes through the real search API with the pretrained models; the
others answer the page's search request in the browser with a response of the API's
contract, so that they check the page alone, in a second or two, without weights.
"""

from __future__ import annotations

import email
import email.policy
import io
import json
import re
import time
from decimal import Decimal
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Page, expect

from tests.browser.conftest import ARTIFACTS, REPO

GROCERY = REPO.parent / "shared" / "datasets" / "grocery-store"
# Model loading on the first search of a process takes seconds on these 2-core machines.
SEARCH_TIMEOUT_MS = 60_000

pytestmark = pytest.mark.django_db(transaction=True)


def save_screenshot(page: Page, name: str, full_page: bool = True) -> Path:
    # A full-page capture resizes the emulated screen for a moment: with phone emulation it
    # drops the touch media features, so take what a phone shows first with full_page=False.
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=full_page)
    return path


def form_fields(request) -> dict[str, bytes]:
    """The fields of a multipart/form-data request the page sent."""
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    message = email.message_from_bytes(head + (request.post_data_buffer or b""), policy=email.policy.HTTP)
    return {
        part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
        for part in message.iter_parts()
    }


def box_of(fields: dict[str, bytes]) -> tuple[float, ...] | None:
    return tuple(float(v) for v in fields["box"].decode().split(",")) if "box" in fields else None


def cards(page: Page) -> list[tuple[int, float]]:
    links = page.locator(".ps-card-link")
    return [
        (int(links.nth(i).get_attribute("data-product-id")), float(links.nth(i).get_attribute("data-score")))
        for i in range(links.count())
    ]


def overflow_x(page: Page) -> int:
    return page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")


# ---- the real thing ---------------------------------------------------------------------

CATALOG = [
    # key in the shared data set, category path, price (SEK)
    ("Banana", "Fruit", "21.90"),
    ("Granny-Smith", "Fruit/Apple", "34.50"),
    ("Orange", "Fruit", "27.00"),
    ("Lemon", "Fruit", "8.90"),
    ("Red-Bell-Pepper", "Vegetables", "12.90"),
    ("Oatly-Oat-Milk", "Packages/Oat-Milk", "19.90"),
]
QUERY_PHOTO = GROCERY / "queries" / "Banana" / "Banana_001.jpg"


@pytest.fixture
def grocery_shop(settings, auto_index):
    """Six products of the shared Grocery Store photos, embedded and indexed in-process."""
    from catalog.services import (
        category_get_or_create_path,
        merchant_get_or_create,
        product_image_add,
        product_upsert,
        review_image_add,
    )
    from search.live import live_index_reset

    if not QUERY_PHOTO.exists():
        pytest.skip(f"shared data set missing: {GROCERY}")
    settings.VISUALSHOP_EMBEDDER = "mobilenet_v2"
    settings.SEARCH_DETECTOR = "nanodet"
    settings.INDEX_RELOAD_SECONDS = 0
    settings.REVIEW_SPOT_CHECK_FRACTION = 0.0
    live_index_reset()
    merchant = merchant_get_or_create(name="Demo Grocer")
    products = []
    for key, category, price in CATALOG:
        product, _ = product_upsert(
            merchant=merchant,
            sku=key,
            title=key.replace("-", " "),
            category=category_get_or_create_path(path=category),
            price=Decimal(price),
            currency="SEK",
            stock=10,
        )
        for path in sorted((GROCERY / "catalog" / key).glob("*.jpg")):
            product_image_add(product=product, source=path.read_bytes(), name=path.name)
        for path in sorted((GROCERY / "reviews" / key).glob("*.jpg"))[:3]:
            review_image_add(product=product, source=path.read_bytes(), name=path.name)
        products.append(product)
    yield products
    live_index_reset()


def is_search(response) -> bool:
    return "/api/v1/search/" in response.url and response.request.method == "POST"


@pytest.mark.slow
@pytest.mark.weights
def test_photo_search_end_to_end(page: Page, page_url, grocery_shop, serve_media):
    from search.models import Click, SearchQuery

    # given the page on a desktop-sized window
    page.set_viewport_size({"width": 1280, "height": 900})
    serve_media(page)
    page.goto(page_url)
    expect(page.get_by_role("heading", name="Search by photo")).to_be_visible()

    # when the shopper chooses a photo
    with page.expect_response(is_search, timeout=SEARCH_TIMEOUT_MS) as first:
        page.set_input_files("#ps-file", str(QUERY_PHOTO))
    first = first.value
    assert first.status == 200, first.text()
    assert box_of(form_fields(first.request)) is None
    body = first.json()

    # then the photo shows every box found, the chosen one highlighted, and the results
    boxes = page.locator(".ps-box")
    expect(boxes).to_have_count(len(body["boxes"]))
    expect(page.locator(".ps-box.is-chosen")).to_have_count(1)
    expect(page.locator(".ps-box.is-chosen")).to_have_attribute("aria-pressed", "true")
    expect(page.locator(".ps-card")).to_have_count(len(body["results"]))
    assert len(body["results"]) >= 3
    expect(page.locator(".ps-card").first).to_contain_text("SEK")
    expect(page.locator(".ps-card").first).to_contain_text("% match")
    expect(page.locator(".ps-card").first).to_contain_text("Demo Grocer")
    expect(page.locator("#ps-grid")).to_have_attribute("data-query-id", str(body["query_id"]))
    # the overlay lies exactly on the displayed photo
    photo, overlay = page.locator("#ps-img").bounding_box(), page.locator("#ps-boxes").bounding_box()
    assert all(abs(photo[k] - overlay[k]) < 1 for k in ("x", "y", "width", "height"))
    save_screenshot(page, "photo-search-desktop.png")
    before = cards(page)

    # when the whole photo was chosen, the shopper first picks a detected box
    if page.locator(".ps-box.is-chosen.is-whole").count():
        with page.expect_response(is_search, timeout=SEARCH_TIMEOUT_MS) as picked:
            page.locator(".ps-box:not(.is-whole)").first.click()
        assert picked.value.status == 200 and box_of(form_fields(picked.value.request)) is not None
        before = cards(page)
    chosen = page.locator(".ps-box.is-chosen")
    start = chosen.bounding_box()

    # when they drag the chosen box towards the middle of the photo
    x0, y0 = start["x"] + start["width"] / 2, start["y"] + start["height"] / 2
    dx = 0.6 * (photo["x"] + photo["width"] / 2 - x0)
    dy = 0.6 * (photo["y"] + photo["height"] / 2 - y0)
    if abs(dx) + abs(dy) < 30:  # already in the middle: move it right and down a little
        dx = dy = 0.1 * photo["width"]
    with page.expect_response(is_search, timeout=SEARCH_TIMEOUT_MS) as dragged:
        page.mouse.move(x0, y0)
        page.mouse.down()
        page.mouse.move(x0 + dx, y0 + dy, steps=8)
        page.mouse.up()
    dragged = dragged.value

    # then the search ran again with that box, in pixels of the uploaded photo
    assert dragged.status == 200, dragged.text()
    sent = box_of(form_fields(dragged.request))
    assert sent is not None
    scale = body["image"]["width"] / photo["width"]
    assert sent[0] == pytest.approx((start["x"] - photo["x"] + dx) * scale, abs=4)
    assert sent[1] == pytest.approx((start["y"] - photo["y"] + dy) * scale, abs=4)
    moved_body = dragged.json()
    expect(page.locator("#ps-grid")).to_have_attribute("data-query-id", str(moved_body["query_id"]))
    after = cards(page)
    assert after == [(r["product_id"], r["score"]) for r in moved_body["results"]]
    assert after != before  # another crop: other order or other scores
    assert SearchQuery.objects.get(pk=moved_body["query_id"]).box_from_user

    # when they shrink it with its corner handle
    handle = page.locator('.ps-handle[data-corner="se"]').bounding_box()
    box_before_resize = page.locator(".ps-box.is-chosen").bounding_box()
    hx, hy = handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2
    with page.expect_response(is_search, timeout=SEARCH_TIMEOUT_MS) as resized:
        page.mouse.move(hx, hy)
        page.mouse.down()
        page.mouse.move(hx - box_before_resize["width"] * 0.3, hy - box_before_resize["height"] * 0.3, steps=6)
        page.mouse.up()
    resized_box = box_of(form_fields(resized.value.request))
    assert resized.value.status == 200
    assert resized_box[2] - resized_box[0] < sent[2] - sent[0]
    assert resized_box[:2] == pytest.approx(sent[:2], abs=1)  # the other corner stayed
    last = resized.value.json()
    expect(page.locator("#ps-grid")).to_have_attribute("data-query-id", str(last["query_id"]))

    # the phone layout of the same page has no sideways scroll
    page.set_viewport_size({"width": 375, "height": 812})
    page.wait_for_timeout(200)
    assert overflow_x(page) <= 0
    save_screenshot(page, "photo-search-phone-results.png")
    page.set_viewport_size({"width": 1280, "height": 900})

    # when they click a result
    first_card = page.locator(".ps-card-link").first
    product_id = int(first_card.get_attribute("data-product-id"))
    with page.expect_navigation():
        first_card.click()
    assert page.url.endswith(f"/products/{product_id}/")

    # then the click is logged against that query's impression (sendBeacon is asynchronous)
    deadline = time.monotonic() + 10
    while not Click.objects.filter(
        impression__query_id=last["query_id"], impression__product_id=product_id, kind="click"
    ).exists():
        assert time.monotonic() < deadline, "no click was recorded"
        time.sleep(0.1)


# ---- the page alone, with answers of the API's contract --------------------------------

PRODUCT_PHOTOS = ["Banana", "Granny-Smith", "Orange", "Lemon", "Red-Bell-Pepper", "Oatly-Oat-Milk"]


def canned_results(query_id: int, shift: int = 0) -> list[dict]:
    out = []
    for i, key in enumerate(PRODUCT_PHOTOS[shift:] + PRODUCT_PHOTOS[:shift]):
        out.append(
            {
                "query_id": query_id,
                "product_id": 100 + PRODUCT_PHOTOS.index(key),
                "sku": key,
                "title": key.replace("-", " ") + (" with a rather long product name" if i == 1 else ""),
                "price": f"{9.9 + 3 * i:.2f}",
                "currency": "SEK",
                "merchant": "Demo Grocer",
                "url": f"/products/{100 + PRODUCT_PHOTOS.index(key)}/",
                "image_url": f"/canned-media/{key}.jpg",
                "score": round(0.91 - 0.07 * i, 4),
                "position": i + 1,
            }
        )
    return out


class FakeSearchApi:
    """Answers the page's POSTs to the search API inside the browser and keeps what was sent."""

    def __init__(self, page: Page, *, status: int = 200, error: dict | None = None):
        self.requests: list[dict[str, bytes]] = []
        self.status, self.error = status, error
        page.route("**/api/v1/search/", self.handle)
        page.route("**/canned-media/*.jpg", self.media)

    def media(self, route):
        key = route.request.url.rsplit("/", 1)[-1].removesuffix(".jpg")
        path = next((GROCERY / "catalog" / key).glob("*.jpg"), None)
        if path is None:
            route.fulfill(status=404)
        else:
            route.fulfill(status=200, body=path.read_bytes(), content_type="image/jpeg")

    def handle(self, route):
        fields = form_fields(route.request)
        self.requests.append(fields)
        if self.status != 200:
            route.fulfill(status=self.status, content_type="application/json", body=json.dumps(self.error or {}))
            return
        width, height = Image.open(io.BytesIO(fields["image"])).size

        def box(x1, y1, x2, y2, score, label):
            corners = {"x1": x1 * width, "y1": y1 * height, "x2": x2 * width, "y2": y2 * height}
            return {**corners, "score": score, "label": label}

        boxes = [
            box(0.1, 0.15, 0.55, 0.6, 0.81, "banana"),
            box(0.5, 0.5, 0.9, 0.95, 0.62, "apple"),
            box(0, 0, 1, 1, 1.0, "image"),
        ]
        sent = box_of(fields)
        if sent is None:
            chosen = 0
        else:
            boxes = [{"x1": sent[0], "y1": sent[1], "x2": sent[2], "y2": sent[3], "score": 1.0, "label": "user"}]
            chosen = 0
        for i, b in enumerate(boxes):
            b["chosen"] = i == chosen
        query_id = len(self.requests)
        body = {
            "query_id": query_id,
            "image": {"width": width, "height": height},
            "boxes": boxes,
            "box": boxes[chosen],
            "results": canned_results(query_id, shift=query_id % len(PRODUCT_PHOTOS)),
            "embedder_version": "canned",
            "timings_ms": {"total": 1.0},
        }
        route.fulfill(status=200, content_type="application/json", body=json.dumps(body))


def test_a_file_that_is_not_a_picture_shows_a_message(page: Page, page_url, tmp_path):
    api = FakeSearchApi(page)
    page.goto(page_url)
    notes = tmp_path / "shopping-list.txt"
    notes.write_text("milk, bananas, oat yoghurt\n")

    page.set_input_files("#ps-file", str(notes))

    expect(page.get_by_role("alert")).to_contain_text("not a picture")
    expect(page.locator("#ps-stage")).to_be_hidden()
    assert api.requests == []


def test_the_servers_error_message_is_shown(page: Page, page_url):
    message = "Too many searches from your network. Please wait a minute."
    api = FakeSearchApi(page, status=429, error={"error": {"code": "throttled", "message": message, "fields": {}}})
    page.goto(page_url)

    page.set_input_files("#ps-file", str(QUERY_PHOTO))

    expect(page.get_by_role("alert")).to_contain_text(message)
    expect(page.get_by_role("button", name="Try again")).to_be_visible()
    assert page.locator("#ps-results").get_attribute("aria-busy") == "false"
    # and trying again sends the same photo again
    with page.expect_response("**/api/v1/search/"):
        page.get_by_role("button", name="Try again").click()
    expect(page.get_by_role("alert")).to_contain_text(message)
    assert len(api.requests) == 2 and api.requests[0]["image"] == api.requests[1]["image"]


def test_a_big_rotated_photo_is_downscaled_upright_before_upload(page: Page, page_url, tmp_path):
    # given a 1600x1200 camera picture stored sideways, with EXIF orientation 6 (rotate 90° CW)
    picture = Image.open(QUERY_PHOTO).convert("RGB").resize((1600, 1200))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "camera.jpg"
    picture.save(path, "JPEG", exif=exif.tobytes(), quality=92)
    api = FakeSearchApi(page)
    page.goto(page_url)

    page.set_input_files("#ps-camera", str(path))

    expect(page.locator(".ps-card")).to_have_count(len(PRODUCT_PHOTOS))
    sent = Image.open(io.BytesIO(api.requests[0]["image"]))
    assert sent.format == "JPEG"
    assert sent.size == (768, 1024)  # upright: the long side is 1024 and vertical
    assert sent.getexif().get(0x0112) in (None, 1)
    assert api.requests[0]["k"] == b"12"


def test_keyboard_picks_moves_and_resizes_boxes(page: Page, page_url):
    api = FakeSearchApi(page)
    page.goto(page_url)
    page.set_input_files("#ps-file", str(QUERY_PHOTO))
    expect(page.locator(".ps-card")).to_have_count(len(PRODUCT_PHOTOS))
    expect(page.get_by_role("button", name=re.compile("^Searching banana"))).to_have_attribute("aria-pressed", "true")

    # when the shopper tabs to the apple box and presses Enter, it is searched
    apple = page.get_by_role("button", name=re.compile("^Search for apple"))
    apple.focus()
    page.keyboard.press("Enter")
    expect(page.locator(".ps-box.is-chosen")).to_have_attribute("aria-label", re.compile("^Searching apple"))
    page.wait_for_function("document.querySelector('#ps-grid').dataset.queryId === '2'")
    width, height = Image.open(io.BytesIO(api.requests[0]["image"])).size
    assert box_of(api.requests[1]) == pytest.approx((0.5 * width, 0.5 * height, 0.9 * width, 0.95 * height), abs=1)
    # focus stays on the chosen box, with a visible focus ring
    assert page.evaluate("document.activeElement.classList.contains('is-chosen')")
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"

    # when they press the arrow keys and Shift+arrow keys, one search follows the last press
    for key in ["ArrowLeft", "ArrowLeft", "ArrowUp", "Shift+ArrowRight"]:
        page.keyboard.press(key)
    page.wait_for_function("document.querySelector('#ps-grid').dataset.queryId === '3'")
    assert len(api.requests) == 3
    step = round(max(width, height) * 0.02)
    x1, y1, x2, y2 = box_of(api.requests[2])
    assert (x1, y1) == pytest.approx((0.5 * width - 2 * step, 0.5 * height - step), abs=1)
    assert x2 - x1 == pytest.approx(0.4 * width + step, abs=1)
    expect(page.locator(".ps-box.is-chosen")).to_have_attribute("aria-label", "Searching your selection")


def test_phone_layout_fits_the_screen(browser, page_url):
    phone = {"viewport": {"width": 375, "height": 812}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
    context = browser.new_context(**phone)
    page = context.new_page()
    try:
        FakeSearchApi(page)
        page.goto(page_url)
        # the camera button is there and every control is a big touch target
        expect(page.locator("label.ps-camera")).to_be_visible()
        for control in page.locator(".ps-button").all():
            if control.is_visible():
                assert control.bounding_box()["height"] >= 44
        assert overflow_x(page) <= 0

        page.set_input_files("#ps-camera", str(QUERY_PHOTO))
        expect(page.locator(".ps-card")).to_have_count(len(PRODUCT_PHOTOS))
        page.wait_for_function("[...document.querySelectorAll('.ps-card img')].every(i => i.complete)")

        # the photo comes above the results, and nothing scrolls sideways
        photo, results = page.locator("#ps-photo").bounding_box(), page.locator("#ps-results").bounding_box()
        assert photo["y"] + photo["height"] <= results["y"]
        assert photo["x"] >= 0 and photo["x"] + photo["width"] <= 375
        assert overflow_x(page) <= 0
        save_screenshot(page, "photo-search-phone.png", full_page=False)
        save_screenshot(page, "photo-search-phone-full.png")
    finally:
        context.close()

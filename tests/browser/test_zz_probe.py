from tests.browser.test_photo_search import FakeSearchApi, QUERY_PHOTO, expect  # noqa


def test_probe(browser, page_url):
    phone = {"viewport": {"width": 375, "height": 812}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
    context = browser.new_context(**phone)
    page = context.new_page()
    page.goto(page_url)
    page.screenshot(path="/tmp/probe1.png")
    print(page.locator("label.ps-camera").bounding_box(), page.locator(".ps-pick").bounding_box())
    context.close()

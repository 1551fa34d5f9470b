from tests.browser.test_photo_search import FakeSearchApi, QUERY_PHOTO, expect  # noqa

def test_probe(browser, page_url):
    phone = {"viewport": {"width": 375, "height": 812}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
    context = browser.new_context(**phone)
    page = context.new_page()
    page.goto(page_url)
    FakeSearchApi(page)
    page.set_input_files("#ps-camera", str(QUERY_PHOTO))
    expect(page.locator(".ps-card")).to_have_count(6)
    print(page.locator("label.ps-camera").bounding_box(), page.locator(".ps-pick").bounding_box())
    print(page.evaluate("(() => { const l = document.querySelector('label.ps-camera'); const s = getComputedStyle(l); return [s.display, s.visibility, s.opacity, s.position, l.outerHTML]; })()"))
    context.close()

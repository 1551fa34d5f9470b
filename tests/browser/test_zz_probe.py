from tests.browser.test_photo_search import *  # noqa

def test_probe(browser, page_url):
    phone = {"viewport": {"width": 375, "height": 812}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
    context = browser.new_context(**phone)
    page = context.new_page()
    page.goto(page_url)
    print(page.evaluate("[matchMedia('(hover: hover)').matches, matchMedia('(pointer: fine)').matches, matchMedia('(pointer: coarse)').matches, getComputedStyle(document.querySelector('label.ps-camera')).display]"))
    FakeSearchApi(page)
    page.set_input_files("#ps-camera", str(QUERY_PHOTO))
    expect(page.locator(".ps-card")).to_have_count(6)
    print(page.evaluate("getComputedStyle(document.querySelector('label.ps-camera')).display"))
    print(page.locator(".ps-pick").inner_html())
    context.close()

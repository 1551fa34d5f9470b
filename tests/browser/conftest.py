"""Browser tests: pytest-playwright driving Debian's Chromium against pytest-django's live server.

`playwright install` cannot fetch browsers on these machines, so the system Chromium is
launched instead (shared/docs/SERVICES.md). When a test fails, a screenshot and the page's
HTML are kept under test-artifacts/ (gitignored).
"""

from __future__ import annotations

import mimetypes
import os
import re
from pathlib import Path

import pytest
from django.urls import reverse

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    # Without these two Chromium keeps trying hosts it cannot reach from here.
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def pytest_collection_modifyitems(config, items):
    if not Path(CHROMIUM).exists():
        skip = pytest.mark.skip(reason=f"{CHROMIUM} is not installed (apt-get install chromium)")
        for item in items:
            if "tests/browser/" in str(item.fspath).replace("\\", "/"):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def _plain_http_live_server():
    # The live server's SecurityMiddleware reads SECURE_SSL_REDIRECT once, when the server
    # starts (before any per-test settings): plain HTTP must be set for the whole session.
    from django.test.utils import override_settings

    with override_settings(SECURE_SSL_REDIRECT=False):
        yield


@pytest.fixture(scope="session")
def live_server(_plain_http_live_server, live_server):
    return live_server


@pytest.fixture(scope="session", autouse=True)
def _allow_orm_beside_playwright():
    # Playwright's sync API marks an event loop as running in this thread from its start to
    # the end of the session, and Django refuses ORM calls from such a thread. Ours are plain
    # synchronous calls (test bodies, database setup and flushes, later tests of the run).
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    yield
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"browser_rep_{report.when}", report)


def artifact_name(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid.split("::", 1)[-1])[:120]


@pytest.fixture(autouse=True)
def _artifacts_on_failure(request):
    """After a failed test, save every open page of it: screenshot and HTML."""
    # Asked for here, the page is closed after this fixture's teardown, not before.
    page = request.getfixturevalue("page") if "page" in request.fixturenames else None
    yield
    report = getattr(request.node, "browser_rep_call", None)
    if page is None or report is None or not report.failed:
        return
    ARTIFACTS.mkdir(exist_ok=True)
    base = ARTIFACTS / artifact_name(request.node.nodeid)
    for i, p in enumerate(page.context.pages):
        suffix = "" if i == 0 else f"-{i}"
        try:
            p.screenshot(path=f"{base}{suffix}.png", full_page=True)
            Path(f"{base}{suffix}.html").write_text(p.content(), encoding="utf-8")
        except Exception as exc:  # a crashed page must not hide the test's own failure
            Path(f"{base}{suffix}.txt").write_text(f"could not save the page: {exc!r}\n", encoding="utf-8")


@pytest.fixture
def serve_media(settings):
    """Serve MEDIA_ROOT to a page: the project only routes /media/ when DEBUG is on."""

    def install(page):
        media_root = Path(settings.MEDIA_ROOT)
        prefix = "/" + settings.MEDIA_URL.strip("/") + "/"

        def handler(route):
            path = route.request.url.split("://", 1)[-1]
            path = path[path.index("/") :].split("?", 1)[0]
            file = (media_root / path[len(prefix) :]).resolve()
            if not path.startswith(prefix) or media_root.resolve() not in file.parents or not file.is_file():
                route.fulfill(status=404, body="not found")
                return
            route.fulfill(status=200, body=file.read_bytes(), content_type=mimetypes.guess_type(file.name)[0])

        page.route(re.compile(r"^https?://[^/]+" + re.escape(prefix)), handler)

    return install


@pytest.fixture
def page_url(live_server) -> str:
    """The photo-search page's address on the live server."""
    return live_server.url + reverse("search:photo_search")

"""Headless Chromium through Playwright for the browser tests (marker `browser`).

Debian's `chromium` at /usr/bin/chromium (`make test` installs it when it can): Playwright's own
browser download does not work here. tests/conftest.py loads these fixtures as a plugin.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.polling import DEADLINE_SECONDS

CHROMIUM = "/usr/bin/chromium"
# Every wait of a browser test (actions, navigation, `expect`) shares the suite's one generous
# deadline: a page that is right passes as soon as it is, however loaded the machine.
TIMEOUT_MS = int(DEADLINE_SECONDS * 1000)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"The browser test needs Chromium at {CHROMIUM}: apt-get install chromium")
    # Playwright's sync API keeps an event loop in this thread, which Django's ORM takes for an
    # async context; the test's own ORM calls are plain synchronous ones. Only for this module.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            expect.set_options(timeout=TIMEOUT_MS)
            chromium = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=TIMEOUT_MS
            )
            yield chromium
            chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    yield page
    context.close()

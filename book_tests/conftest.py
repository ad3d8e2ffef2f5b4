"""Fixtures of the browser tests: the built site on localhost and one headless Chromium per module."""

from __future__ import annotations

import pytest

from offline_site import CHROMIUM, CHROMIUM_ARGS, serve_site


@pytest.fixture(scope="module")
def server():
    url, httpd = serve_site()
    yield url
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright  # the tests skip before this when playwright is missing

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()

"""What the browser tests share: the built site served from localhost, a headless Chromium, and a page
opened with every request to another host refused and recorded, its JavaScript errors collected.

The fixtures ``server`` and ``browser`` are registered by ``book_tests/conftest.py``.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
# console messages that are not faults: the theme logs this one as an error on a reader's first
# visit, when no light/dark choice is stored yet, and then uses its default
HARMLESS = ("Got invalid theme mode: . Resetting to auto.",)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve_site():
    """Serve ``_build/html`` on a free localhost port; returns (base URL, the server to shut down)."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(SITE)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}/", httpd


class OfflineVisit:
    """One page opened with the network cut off: its errors, its refused requests, and the page."""

    def __init__(self, browser, server: str, url: str, *, height: int = 900, init_script: str | None = None):
        self.context = browser.new_context(viewport={"width": 1280, "height": height})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.external: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("console", lambda msg: self.errors.append(msg.text) if msg.type == "error" and msg.text not in HARMLESS else None)

        def route(r):
            if r.request.url.startswith(server):
                r.continue_()
            else:
                self.external.append(r.request.url)
                r.abort()

        self.page.route("**/*", route)
        if init_script:
            self.page.add_init_script(init_script)
        self.url = url
        self.page.goto(url, wait_until="load")

    def close(self) -> None:
        self.context.close()

"""The built book, opened page by page in a headless Chromium with no network.

Run after the build (``.ci/run`` does): ``pytest book_tests``. The site in ``_build/html`` is served
from localhost; every request to another host is refused and recorded, so a page that needs the
internet (a CDN MathJax, a remote image) fails here as it would for an offline reader.
Needs Debian's ``chromium`` (or ``$CHROMIUM``) and the ``playwright`` package; screenshots of two
chapters go to ``_build/screenshots/`` (artefacts of the run, not committed).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import pytest
import yaml

from offline_site import CHROMIUM, ROOT, SCREENSHOTS, SITE, OfflineVisit

SCREENSHOT_PAGES = ("notebooks/01_forward_process", "notebooks/05_sampling")

pytest.importorskip("playwright.sync_api", reason="pip install playwright (the browser test drives Debian's chromium)")
if not (SITE / "index.html").exists():
    pytest.skip("build the book first: jupyter-book build .", allow_module_level=True)
if not Path(CHROMIUM).exists():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)


def toc_pages() -> list[str]:
    """Every page of _toc.yml, as paths without suffix (book/preface, notebooks/01_forward_process, ...)."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [toc["root"]]
    for part in toc.get("parts", []):
        pages += [chapter["file"] for chapter in part["chapters"]]
    return pages


PAGES = toc_pages()
CHAPTERS = [page for page in PAGES if page.startswith("notebooks/")]


# Pages that reload themselves once after "load": the Try it page does when its service worker takes
# control (book/try_it.md, "The runtime"), and defines window.tryIt only in the reloaded document.
SETTLED_AFTER_RELOAD = {"book/try_it": "() => window.tryIt !== undefined"}


class Visit(OfflineVisit):
    """A chapter or page of the book, opened offline, once its maths is typeset."""

    def __init__(self, browser, server: str, page_path: str):
        super().__init__(browser, server, urljoin(server, page_path + ".html"))
        if page_path in SETTLED_AFTER_RELOAD:
            # wait_for_function polls on across the reload; an evaluate that straddles it loses its document
            self.page.wait_for_function(SETTLED_AFTER_RELOAD[page_path], timeout=60_000)
        self.page.wait_for_function("() => !window.MathJax || !window.MathJax.startup || window.MathJax.startup.promise !== undefined")
        self.page.evaluate("() => window.MathJax && window.MathJax.startup ? window.MathJax.startup.promise : null")


@pytest.fixture(scope="module")
def visits(browser, server):
    opened = {page: Visit(browser, server, page) for page in PAGES}
    yield opened
    for visit in opened.values():
        visit.close()


@pytest.mark.parametrize("page", PAGES)
def test_page_loads_without_errors_or_network(visits, page):
    visit = visits[page]
    assert visit.errors == [], f"{page}: JavaScript errors {visit.errors}"
    # the launch buttons link to Colab and the repository, but nothing is *fetched* from elsewhere
    assert visit.external == [], f"{page} requested other hosts: {visit.external}"


@pytest.mark.parametrize("page", PAGES)
def test_maths_is_typeset(visits, page):
    article = visits[page].page.locator("article")
    typeset = visits[page].page.locator("article mjx-container").count()
    text = article.inner_text()
    assert "$$" not in text and "\\begin{" not in text, f"{page}: raw TeX left on the page"
    source = (SITE / f"{page}.html").read_text()
    if 'class="math' in source:
        assert typeset > 0, f"{page} has maths but MathJax typeset none of it"


@pytest.mark.parametrize("page", PAGES)
def test_page_fits_the_width(visits, page):
    """At 1280 px nothing makes the page scroll sideways, and no code or output block scrolls on its own."""
    page_obj = visits[page].page
    wide = page_obj.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert wide <= 1, f"{page} is {wide} px wider than the window"
    scrolling = page_obj.evaluate(
        "() => Array.from(document.querySelectorAll('div.cell div.highlight pre, div.cell_output pre'))"
        ".filter(el => el.scrollWidth > el.clientWidth + 1).map(el => el.textContent.slice(0, 60))")
    assert scrolling == [], f"{page}: code or output blocks that scroll sideways: {scrolling}"


@pytest.mark.parametrize("page", PAGES)
def test_every_image_loads(visits, page):
    broken = visits[page].page.evaluate(
        "() => Array.from(document.images).filter(img => !(img.complete && img.naturalWidth > 0)).map(img => img.src.slice(0, 120))")
    assert broken == [], f"{page}: images that did not load: {broken}"


@pytest.mark.parametrize("page", PAGES)
def test_internal_links_resolve(visits, page):
    visit = visits[page]
    hrefs = visit.page.evaluate("() => Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
    base = urlparse(visit.url)
    missing = []
    for href in hrefs:
        target = urlparse(href)
        if target.netloc != base.netloc or target.scheme not in ("http", "https"):
            continue
        path = SITE / unquote(target.path).lstrip("/")
        if path.is_dir():
            path = path / "index.html"
        if not path.exists():
            missing.append(href)
    assert missing == [], f"{page}: links to missing files {sorted(set(missing))}"


@pytest.mark.parametrize("page", CHAPTERS)
def test_colab_link_opens_this_chapter(visits, page):
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    repo = urlparse(config["repository"]["url"]).path.strip("/")
    hrefs = visits[page].page.evaluate("() => Array.from(document.querySelectorAll('a[href*=\"colab.research.google.com\"]')).map(a => a.href)")
    assert hrefs, f"{page} has no Colab button"
    expected = f"https://colab.research.google.com/github/{repo}/blob/{config['repository']['branch']}/{page}.ipynb"
    assert set(hrefs) == {expected}, f"{page}: Colab links {hrefs}, expected {expected}"


@pytest.mark.parametrize("page", CHAPTERS)
def test_notebook_can_be_downloaded(visits, page):
    hrefs = visits[page].page.evaluate("() => Array.from(document.querySelectorAll('a[href$=\".ipynb\"]')).map(a => a.href)")
    local = [h for h in hrefs if urlparse(h).netloc == urlparse(visits[page].url).netloc]
    assert local, f"{page} offers no download of its notebook"
    assert all((SITE / unquote(urlparse(h).path).lstrip("/")).exists() for h in local)


def test_interactive_figures_respond(visits):
    """Every kernel-free slider on every page changes the shown frame when moved."""
    found = 0
    for page, visit in visits.items():
        sliders = visit.page.locator("div.dh-frames")
        for i in range(sliders.count()):
            figure = sliders.nth(i)
            found += 1
            image = figure.locator("img.dh-frame")
            slider = figure.locator("input[type=range]")
            first = image.get_attribute("src")
            last_index = int(slider.get_attribute("max"))
            slider.fill(str(last_index))
            slider.dispatch_event("input")
            assert image.get_attribute("src") != first, f"{page}: slider {i} did not change the frame"
            label = figure.locator(".dh-label").inner_text()
            assert label, f"{page}: slider {i} shows no label"
    assert found > 0, "no interactive figure found on any page"


def test_screenshots_for_the_record(visits):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for page in SCREENSHOT_PAGES:
        path = SCREENSHOTS / (re.sub(r"\W+", "_", page) + ".png")
        visits[page].page.screenshot(path=str(path), full_page=False)
        assert path.stat().st_size > 10_000

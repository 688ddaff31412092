"""The explorers of section 13.1 (book/13_explorer.ipynb) work in the BUILT book, in a real
browser, with no kernel and no internet: the page is served from ``_build/html`` on 127.0.0.1,
headless Chromium (Debian's
/usr/bin/chromium, driven by the pip package playwright, which downloads nothing here) opens it, every
request that leaves 127.0.0.1 is refused, and the test moves the controls the way a reader does and
checks that the displayed view changes.

Uses the session fixtures ``book_html`` (the book, built once per session) and ``chromium`` of
tests/conftest.py. With ``IAIABL_BOOK_HTML=_build/html`` it checks an existing build; with
``IAIABL_SCREENSHOT_DIR=DIR`` it keeps a screenshot of the explorers.
"""
from __future__ import annotations

import functools
import http.server
import os
import re
import threading
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CHAPTER = "13_explorer"
ON_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
STATIC_LINE = "Static: precomputed views, no kernel needed"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-dev-shm-usage"]


def _explorer_cells() -> int:
    """How many explorers the section displays (code cells ending in a ``widgets.<explorer>(...)`` call)."""
    nb = nbformat.read(REPO / "book" / f"{CHAPTER}.ipynb", as_version=4)
    names = r"(case_explorer|dismiss_reasoning|activation_precision_explorer|fine_annotation_comparison|prototype_gallery)"
    return sum(1 for c in nb.cells if c.cell_type == "code" and
               re.search(rf"^widgets\.{names}\(", c.source.strip().splitlines()[-1] if c.source.strip() else ""))


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def served(book_html):
    """``book_html`` served on 127.0.0.1 (an ephemeral port) from a thread."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(book_html)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser(chromium):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if ON_CI:
            pytest.fail("the playwright package is missing (requirements.txt)")
        pytest.skip("playwright is not installed (pip install -r requirements.txt)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def _offline_page(browser, served: str, name: str):
    """A new page with the chapter ``name`` loaded and every request that leaves the local server
    refused; returns (page, refused urls, page errors, [(status, url)] of the responses)."""
    page = browser.new_page(viewport={"width": 1280, "height": 1600})
    refused, errors, loaded = [], [], []

    def route(r):
        if r.request.url.startswith(served) or r.request.url.startswith("data:"):
            r.continue_()
        else:
            refused.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("pageerror", lambda e: errors.append(f"{e.message}\n{e.stack or ''}"))
    page.on("response", lambda r: loaded.append((r.status, r.url)))
    page.goto(f"{served}book/{name}.html", wait_until="load")
    return page, refused, errors, loaded


@pytest.fixture(scope="module")
def chapter(served, browser):
    """The chapter's page, loaded with every off-host request refused; the widgets rendered."""
    page, refused, errors, loaded = _offline_page(browser, served, CHAPTER)
    expected = _explorer_cells()
    assert expected >= 3, f"chapter {CHAPTER} shows {expected} explorers; expected at least 3"
    page.wait_for_function(f"document.querySelectorAll('.iaiabl-explorer').length >= {expected}",
                           timeout=60_000)
    page.wait_for_timeout(500)
    yield {"page": page, "refused": refused, "errors": errors, "loaded": loaded, "expected": expected,
           "base": served}
    if os.environ.get("IAIABL_SCREENSHOT_DIR"):
        page.screenshot(path=str(Path(os.environ["IAIABL_SCREENSHOT_DIR"]) / "widgets.png"), full_page=True)
    page.close()


def _explorer(page, title: str):
    loc = page.locator(".iaiabl-explorer", has_text=title)
    assert loc.count() >= 1, f"no explorer titled {title!r} on the page"
    return loc.first


_VISIBLE = """(root, sel) => Array.from(root.querySelectorAll(sel))
    .filter(e => e.offsetParent !== null)
    .map(e => [e.getAttribute(%r), e.textContent.trim().slice(0, 300)])"""


def _visible(explorer, selector: str, attribute: str) -> list[list[str]]:
    """[attribute, text] of the visible elements matching ``selector`` inside ``explorer``."""
    return explorer.evaluate(_VISIBLE % attribute, selector)


def _visible_imgs(explorer) -> list[str]:
    return explorer.evaluate("root => Array.from(root.querySelectorAll('img'))"
                             ".filter(e => e.offsetParent !== null).map(e => e.src.slice(-200))")


def _wait_change(page, fn, before, timeout_ms: int = 10_000):
    for _ in range(timeout_ms // 100):
        now = fn()
        if now != before:
            return now
        page.wait_for_timeout(100)
    return fn()


def test_explorers_render_from_the_page_alone(chapter):
    page = chapter["page"]
    explorers = page.locator(".iaiabl-explorer")
    assert explorers.count() == chapter["expected"]
    for k in range(explorers.count()):
        text = explorers.nth(k).inner_text()
        assert STATIC_LINE in text, f"explorer {k} does not say it is static: {text[:200]!r}"
    # errors raised by the widget manager (others, e.g. the theme's, are not this module's business)
    widget_errors = [e for e in chapter["errors"] if "ipywidgets/embed.js" in e or "jupyter-widgets" in e]
    assert not widget_errors, f"JavaScript errors in the widget manager: {widget_errors[:3]}"
    # the widget manager came from the book itself, not from a CDN
    assert any(s == 200 and "/_static/ipywidgets/embed.js" in u for s, u in chapter["loaded"]), \
        "the vendored widget manager (_static/ipywidgets/embed.js) was not loaded"
    widget_cdn = [u for u in chapter["refused"] if re.search(r"jupyter-widgets|html-manager|embed-amd|require(\.min)?\.js", u)]
    assert not widget_cdn, f"the page tried to fetch widget code from the internet: {widget_cdn}"
    failed = [(s, u) for s, u in chapter["loaded"] if s >= 400 and u.startswith(chapter["base"])]
    assert not failed, f"missing files in the built book: {failed[:5]}"


def test_the_page_stays_light(book_html):
    """Every view is embedded in the page (static mode): keep it a few megabytes."""
    size = (book_html / "book" / f"{CHAPTER}.html").stat().st_size
    assert size < 6_000_000, f"{CHAPTER}.html is {size / 1e6:.1f} MB: fewer cases or smaller views"


def test_picking_another_case_shows_that_case(chapter):
    page = chapter["page"]
    ex = _explorer(page, "Case explorer")
    before = _visible(ex, ".iaiabl-case", "data-case")
    imgs_before = _visible_imgs(ex)
    assert len(before) == 1, f"expected one visible case view, saw {before}"
    select = ex.locator("select").first
    labels = select.locator("option").all_inner_texts()
    assert len(labels) >= 2, "the case picker offers fewer than two cases"
    assert labels[0].startswith(before[0][0])
    select.select_option(index=1)                      # the reader picks the second case
    after = _wait_change(page, lambda: _visible(ex, ".iaiabl-case", "data-case"), before)
    assert len(after) == 1 and after != before, "the displayed case did not change"
    assert labels[1].startswith(after[0][0]), f"picked {labels[1]!r}, shown {after[0][0]!r}"
    assert _visible_imgs(ex) != imgs_before, "the figure did not change with the case"
    probs = ex.locator(".iaiabl-prob").all_inner_texts()
    assert any("the model's estimated probability that this margin is" in t for t in probs)


def test_moving_tau_changes_the_precision_view(chapter):
    page = chapter["page"]
    ex = _explorer(page, "Activation precision")
    before = _visible(ex, ".iaiabl-ap", "data-tau")
    assert len(before) == 1 and before[0][0] == "0.95", before
    handle = ex.locator(".noUi-handle, .ui-slider-handle").first
    handle.focus()
    page.keyboard.press("ArrowLeft")                   # one step down: τ = 0.9
    after = _wait_change(page, lambda: _visible(ex, ".iaiabl-ap", "data-tau"), before)
    assert len(after) == 1 and after[0][0] == "0.9", f"after moving the slider: {after}"
    assert "Activation precision" in after[0][1]
    # and the case picker still works on the nested views
    select = ex.locator("select").first
    case_before = _visible(ex, ".iaiabl-case", "data-case")
    select.select_option(index=1)
    case_after = _wait_change(page, lambda: _visible(ex, ".iaiabl-case", "data-case"), case_before)
    assert case_after != case_before
    assert _visible(ex, ".iaiabl-ap", "data-tau")[0][0] == "0.9", "the case change lost the τ"


def test_dismissing_a_prototype_changes_the_probabilities(chapter):
    page = chapter["page"]
    ex = _explorer(page, "Dismiss part of the reasoning")
    before = _visible(ex, ".iaiabl-dismissed", "data-dismissed")
    assert before and before[0][0] == "", before
    table_before = _visible(ex, ".iaiabl-dismiss-table", "class")
    buttons = ex.locator(".widget-toggle-buttons button")
    assert buttons.count() >= 2
    label = buttons.nth(1).inner_text()
    buttons.nth(1).click()                             # dismiss the first prototype
    after = _wait_change(page, lambda: _visible(ex, ".iaiabl-dismissed", "data-dismissed"), before)
    assert after and after[0][0] != "", "no prototype shown as dismissed"
    assert f"prototype {after[0][0]}" in label
    assert _visible(ex, ".iaiabl-dismiss-table", "class") != table_before, "the probabilities did not change"
    assert "one at a time" in ex.inner_text()


def test_equations_typeset_without_internet(served, browser):
    """The equations of chapter 3 are typeset by the vendored MathJax (book/_static/mathjax), with
    every request that leaves the local server refused: no raw LaTeX on the page."""
    page, refused, errors, loaded = _offline_page(browser, served, "03_prototype_similarity")
    try:
        n_math = page.evaluate("document.querySelectorAll('span.math, div.math').length")
        assert n_math >= 3, f"chapter 3 has {n_math} equations; expected several"
        try:
            page.wait_for_function(f"document.querySelectorAll('mjx-container').length >= {n_math}", timeout=30_000)
        except Exception:   # playwright's TimeoutError: say what the reader would see
            done = page.evaluate("document.querySelectorAll('mjx-container').length")
            pytest.fail(f"{done} of {n_math} equations typeset after 30 s; requests refused: {refused[:3]}")
        assert any(s == 200 and "/_static/mathjax/tex-chtml.js" in u for s, u in loaded), \
            "the vendored MathJax (_static/mathjax/tex-chtml.js) was not loaded"
        assert not [u for u in refused if "mathjax" in u.lower()], f"MathJax fetched from the internet: {refused}"
        assert any(s == 200 and "/_static/mathjax/output/chtml/fonts/" in u for s, u in loaded), "no MathJax font"
        failed = [(s, u) for s, u in loaded if s >= 400 and "mathjax" in u]
        assert not failed, f"missing MathJax files: {failed[:5]}"
        text = page.inner_text("article")
        assert "\\frac" not in text and "\\lVert" not in text, "raw LaTeX is visible on the page"
    finally:
        page.close()

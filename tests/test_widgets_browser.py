"""The explorers of section 13.1 (book/13_explorer.ipynb) work in the BUILT book, in a real
browser, with no kernel and no internet: the page is served from ``_build/html`` on 127.0.0.1,
headless Chromium (Debian's /usr/bin/chromium, driven by the pip package playwright, which downloads
nothing here) opens it, every request that leaves 127.0.0.1 is refused, and the tests use the
explorers the way a reader does: read a case large, switch its heat maps on, dismiss two
prototypes of a second case, open the ground truth, set a percentage, find the distrusted
prototypes first; and check that nothing on the page logs an error.

Uses the session fixtures ``book_html`` (the book, built once per session) and ``chromium`` of
tests/conftest.py. With ``IAIABL_BOOK_HTML=_build/html`` it checks an existing build; with
``IAIABL_SCREENSHOT_DIR=DIR`` it keeps a screenshot of the explorers.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest

from conftest import serve_directory, wait_change as _wait_change

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CHAPTER = "13_explorer"
STATIC_LINE = "Static: precomputed views, no kernel needed"
MAX_PAGE_BYTES = 15_000_000
EXPLORERS = r"(case_explorer|dismiss_reasoning|activation_precision_explorer|fine_annotation_comparison|prototype_gallery)"


def _explorer_cells() -> int:
    """How many explorers the section displays (code cells ending in a ``widgets.<explorer>(...)`` call,
    or in the name a ``name = widgets.<explorer>(...)`` of the cell bound)."""
    nb = nbformat.read(REPO / "book" / f"{CHAPTER}.ipynb", as_version=4)
    n = 0
    for c in nb.cells:
        last = c.source.strip().splitlines()[-1].strip() if c.cell_type == "code" and c.source.strip() else ""
        bound = re.findall(rf"^(\w+)\s*=\s*widgets\.{EXPLORERS}\(", c.source, re.M) if last else []
        n += bool(re.search(rf"^widgets\.{EXPLORERS}\(", last)) or last in [b if isinstance(b, str) else b[0] for b in bound]
    return n


@pytest.fixture(scope="module")
def served(book_html):
    """``book_html`` served on 127.0.0.1 (an ephemeral port) from a thread."""
    with serve_directory(book_html) as url:
        yield url


def _offline_page(browser, served: str, name: str, **context):
    """A new page with the chapter ``name`` loaded and every request that leaves the local server
    refused; returns (page, refused urls, page errors, console errors, [(status, url)])."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 1600}, **context)
    page = ctx.new_page()
    refused, errors, console, loaded = [], [], [], []

    def route(r):
        if r.request.url.startswith(served) or r.request.url.startswith("data:"):
            r.continue_()
        else:
            refused.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("pageerror", lambda e: errors.append(f"{e.message}\n{e.stack or ''}"))
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    page.on("response", lambda r: loaded.append((r.status, r.url)))
    page.goto(f"{served}book/{name}.html", wait_until="load")
    return page, refused, errors, console, loaded


@pytest.fixture(scope="module")
def chapter(served, browser):
    """The chapter's page, loaded with every off-host request refused; the widgets rendered."""
    page, refused, errors, console, loaded = _offline_page(browser, served, CHAPTER)
    expected = _explorer_cells()
    assert expected >= 4, f"chapter {CHAPTER} shows {expected} explorers; expected at least 4"
    page.wait_for_function(f"document.querySelectorAll('.iaiabl-explorer').length >= {expected}",
                           timeout=60_000)
    page.wait_for_timeout(500)
    yield {"page": page, "refused": refused, "errors": errors, "console": console, "loaded": loaded,
           "expected": expected, "base": served}
    if os.environ.get("IAIABL_SCREENSHOT_DIR"):
        page.screenshot(path=str(Path(os.environ["IAIABL_SCREENSHOT_DIR"]) / "widgets.png"), full_page=True)
    page.context.close()


def _explorer(page, title: str):
    loc = page.locator(".iaiabl-explorer", has_text=title)
    assert loc.count() >= 1, f"no explorer titled {title!r} on the page"
    return loc.first


_VISIBLE = """(root, sel) => Array.from(root.querySelectorAll(sel))
    .filter(e => e.offsetParent !== null || getComputedStyle(e).position === 'fixed')
    .map(e => [e.getAttribute(%r), e.textContent.trim().slice(0, 400)])"""


def _visible(explorer, selector: str, attribute: str) -> list[list[str]]:
    """[attribute, text] of the visible elements matching ``selector`` inside ``explorer``."""
    return explorer.evaluate(_VISIBLE % attribute, selector)




def _box(locator) -> dict:
    return locator.evaluate("e => { const r = e.getBoundingClientRect(); return {w: r.width, h: r.height, "
                            "position: getComputedStyle(e).position} }")


# ---------------------------------------------------------------------------------------------
# the page
# ---------------------------------------------------------------------------------------------


def test_explorers_render_from_the_page_alone(chapter):
    page = chapter["page"]
    explorers = page.locator(".iaiabl-explorer")
    assert explorers.count() == chapter["expected"]
    for k in range(explorers.count()):
        text = explorers.nth(k).inner_text()
        assert STATIC_LINE in text, f"explorer {k} does not say it is static: {text[:200]!r}"
        assert "small demonstration model" in text and "synthetic mammograms" in text, \
            f"explorer {k} does not say what model and data it shows"
    # the widget manager came from the book itself, not from a CDN
    assert any(s == 200 and "/_static/ipywidgets/embed.js" in u for s, u in chapter["loaded"]), \
        "the vendored widget manager (_static/ipywidgets/embed.js) was not loaded"
    widget_cdn = [u for u in chapter["refused"] if re.search(r"jupyter-widgets|html-manager|embed-amd|require(\.min)?\.js", u)]
    assert not widget_cdn, f"the page tried to fetch widget code from the internet: {widget_cdn}"
    failed = [(s, u) for s, u in chapter["loaded"] if s >= 400 and u.startswith(chapter["base"])]
    assert not failed, f"missing files in the built book: {failed[:5]}"


def test_the_page_stays_light_and_declares_its_scripts_once(book_html):
    """Every view is embedded in the page (static mode): at most 15 MB. Each inline script once."""
    html = (book_html / "book" / f"{CHAPTER}.html").read_text(encoding="utf-8")
    size = len(html.encode("utf-8"))
    assert size <= MAX_PAGE_BYTES, f"{CHAPTER}.html is {size / 1e6:.1f} MB: fewer cases or smaller views"
    assert html.count("const THEBE_JS_URL") == 1


def test_without_javascript_each_explorer_says_it_needs_it(served, browser):
    page, *_ = _offline_page(browser, served, CHAPTER, java_script_enabled=False)
    try:
        notes = page.locator(".iaiabl-noscript")
        assert notes.count() == _explorer_cells()
        assert notes.first.is_visible() and "needs JavaScript" in notes.first.inner_text()
    finally:
        page.context.close()


# ---------------------------------------------------------------------------------------------
# the case reader
# ---------------------------------------------------------------------------------------------


def test_the_case_is_read_large_without_overlay_then_with_a_heat_map_and_enlarged(chapter):
    page = chapter["page"]
    ex = _explorer(page, "Case reader")
    frame = ex.locator(".iaiabl-frame").first
    roi = frame.locator("img.iaiabl-roi")
    size = _box(roi)
    assert size["w"] >= 512 and size["h"] >= 512, f"the region of interest is rendered at {size}"
    heats = frame.locator("img.iaiabl-heat")
    assert heats.count() >= 1
    assert not any(heats.nth(k).is_visible() for k in range(heats.count())), "a heat map is on at first"
    ex.locator(".iaiabl-picks label.iaiabl-pick-1").first.click()        # the first heat map
    assert heats.nth(0).is_visible() and _box(heats.nth(0))["w"] == size["w"]
    ex.locator(".iaiabl-picks label.iaiabl-pick-0").first.click()        # back to no heat map
    assert not heats.nth(0).is_visible()
    frame.click()                                                       # click to enlarge
    page.wait_for_timeout(200)
    big = _box(roi)
    assert big["w"] > size["w"] * 1.5 and _box(frame)["position"] == "fixed", f"not enlarged: {big}"
    frame.click()                                                       # and back
    page.wait_for_timeout(200)
    assert _box(roi)["w"] == size["w"]


def _rgb_stops(explorer) -> list[list[int]]:
    css = explorer.locator(".iaiabl-legend-bar").first.evaluate("e => getComputedStyle(e).backgroundImage")
    return [[int(v) for v in m] for m in re.findall(r"rgb\((\d+), (\d+), (\d+)\)", css)]


_HEAT_PIXELS = """async (img) => {
    await img.decode();
    const c = document.createElement('canvas');
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    const g = c.getContext('2d');
    g.drawImage(img, 0, 0);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    const out = [];
    for (let i = 0; i < d.length; i += 4 * 7) out.push([d[i], d[i + 1], d[i + 2], d[i + 3]]);
    return out;
}"""


def test_the_legend_is_the_heat_maps_scale(chapter):
    """Every heat map's legend states its own scale (fitted to the map: the colour map, the numbers
    where colour starts and ends, the label), shown with it; its gradient is the scale's colours;
    and every coloured pixel of the map is a colour of that gradient, drawn opaque (the images are
    lossless, so no colour falls off the scale and none is blended with the image)."""
    from iaiabl_lib import plots

    page = chapter["page"]
    ex = _explorer(page, "Case reader")
    ex.locator(".iaiabl-picks label.iaiabl-pick-1").first.click()        # the first heat map, on
    page.wait_for_timeout(200)
    img = ex.locator("img.iaiabl-heat:visible").first
    legend = ex.locator(".iaiabl-layer-legend:visible .iaiabl-legend").first
    attrs = ("data-cmap", "data-vmin", "data-vmax", "data-label", "data-scale")
    got = {a: legend.get_attribute(a) for a in attrs}
    assert got == {a: img.get_attribute(a) for a in attrs}, "the legend shown is not the map's"
    assert got["data-cmap"] == plots.SIMILARITY_CMAP and got["data-scale"] == "per map"
    assert plots.SIMILARITY_LABEL in legend.inner_text() and "no colour below" in legend.inner_text()
    assert img.evaluate("e => getComputedStyle(e).opacity") == "1"
    stops = np.array(_rgb_stops(ex.locator(".iaiabl-layer-legend:visible")), dtype=float)
    lo, hi = float(got["data-vmin"]), float(got["data-vmax"])
    scale = plots.HeatScale(lo, lo, hi)
    expect = plots.similarity_rgb(np.linspace(lo, hi, len(stops)), scale).astype(float)
    # within one of the colour map's 256 steps: the attributes hold 6 digits, and a stop on a step's
    # edge may fall to the step below
    assert np.abs(stops - expect).max() <= 8, "the legend's gradient is not the scale's colours"
    ramp = np.concatenate([np.linspace(stops[i], stops[i + 1], 16, endpoint=False) for i in range(len(stops) - 1)])
    pixels = np.array(img.evaluate(_HEAT_PIXELS), dtype=float)
    coloured = pixels[pixels[:, 3] == 255][:, :3]
    assert len(coloured), "the heat map has no coloured pixel"
    far = np.sqrt(((coloured[:, None, :] - ramp[None]) ** 2).sum(-1)).min(1)
    assert far.max() <= 12, f"a pixel {far.max():.0f} away from the legend's colours"
    ex.locator(".iaiabl-picks label.iaiabl-pick-0").first.click()


def _case_view(ex) -> str:
    rows = _visible(ex, ".iaiabl-case", "data-row")
    assert len(rows) == 1, rows
    return rows[0][0]


def test_a_pair_dismissal_on_a_second_case_changes_the_reading(chapter):
    page = chapter["page"]
    ex = _explorer(page, "Case reader")
    select = ex.locator(".iaiabl-case-picker select").first          # the case list (case-number order)
    options = select.locator("option").all_inner_texts()
    assert len(options) >= 2
    assert all(re.fullmatch(r"Test\s+case\s+\d+", o) for o in options), options
    first_case = _case_view(ex)
    chosen = None
    for k in range(1, len(options)):                   # a second case with two prototypes to dismiss
        select.select_option(index=k)
        _wait_change(page, lambda: _case_view(ex), first_case)
        if ex.locator(".iaiabl-first-row label:visible").count() >= 3:
            chosen = k
            break
    assert chosen is not None, "no case besides the first offers two prototypes to dismiss"
    assert _case_view(ex) != first_case
    table = lambda: _visible(ex, ".iaiabl-dismissed", "data-dismissed")
    before = table()
    assert before and before[0][0] == "", before
    after_cells = lambda: ex.locator(".iaiabl-wi:visible .iaiabl-dismiss-table .iaiabl-after").all_inner_texts()
    before_cells = ex.locator(".iaiabl-wi:visible .iaiabl-dismiss-table .iaiabl-before").all_inner_texts()
    assert after_cells() == before_cells
    first_row, second_row = ex.locator(".iaiabl-first-row:visible"), ex.locator(".iaiabl-second-row:visible")
    label_a = first_row.locator("label").nth(1).inner_text()
    label_b = second_row.locator("label").nth(2).inner_text()
    first_row.locator("label").nth(1).click()
    second_row.locator("label").nth(2).click()
    assert first_row.locator("label").nth(1).get_attribute("aria-pressed") == "true"
    now = _wait_change(page, table, before)
    now = _wait_change(page, table, now) if len(now[0][0].split(",")) < 2 else now
    dismissed = now[0][0].split(",")
    assert len(dismissed) == 2, now
    for label in (label_a, label_b):
        assert re.search(r"prototype (\d+)", label).group(1) in dismissed
    assert after_cells() != before_cells, "dismissing two prototypes changed nothing on the page"
    assert "Dismissed: prototype" in now[0][1]


def test_ground_truth_is_shown_only_on_request(chapter):
    page = chapter["page"]
    ex = _explorer(page, "Case reader")
    truth = ex.locator("details.iaiabl-truth").first
    body = truth.locator(".iaiabl-truth-body")
    assert not body.is_visible()
    hidden_text = ex.inner_text()
    assert "Recorded margin:" not in hidden_text and not re.search(r"pathology: (benign|malignant)", hidden_text)
    outside_details = ex.evaluate("e => { const c = e.cloneNode(true); "
                                  "c.querySelectorAll('.iaiabl-details').forEach(d => d.remove()); return c.innerText; }")
    assert not re.search(r"P_\d{5}", outside_details), "a dataset ID outside the details line"
    truth.locator("summary").click()
    assert body.is_visible()
    assert re.search(r"Recorded margin: (circumscribed|indistinct|spiculated); pathology: (benign|malignant)",
                     body.inner_text())


# ---------------------------------------------------------------------------------------------
# prototype gallery, where the model looks
# ---------------------------------------------------------------------------------------------


def test_flagged_prototypes_are_listed_first(chapter):
    page = chapter["page"]
    ex = _explorer(page, "Prototype gallery")
    flags = [int(f) for f in ex.locator("tr.iaiabl-health").evaluate_all("rs => rs.map(r => r.dataset.flagged)")]
    assert flags, "no health table"
    if not any(flags):
        pytest.skip("no prototype of this build is flagged: nothing to list first")
    assert flags == sorted(flags, reverse=True), f"flagged prototypes are not first: {flags}"
    options = ex.locator("select").first.locator("option").all_inner_texts()
    assert [o.startswith("⚠") for o in options] == [bool(f) for f in flags]
    for k, f in enumerate(flags):
        cell = ex.locator("tr.iaiabl-health").nth(k).locator("td").last.inner_text()   # "why to distrust it"
        assert cell.startswith("Distrust it:") == bool(f), cell
    view = _visible(ex, ".iaiabl-prototype", "data-flagged")
    assert view and view[0][0] == "1" and "Distrust it:" in ex.locator(".iaiabl-flag").first.inner_text()


def _ap(ex) -> list[list[str]]:
    return _visible(ex, ".iaiabl-ap", "data-top")


def test_the_slider_sets_the_percentage_and_no_box_misreads_a_number(chapter):
    """Issue 22, item 6: no box on the page reads a typed number (the browser's whole-number box
    dropped the point of "2.5" and showed 25 %): the percentage is the slider's, moved with the arrow
    keys and written beside it; the view follows; the case picker keeps it."""
    page = chapter["page"]
    assert page.locator(".iaiabl-explorer input[type=number]").count() == 0
    assert page.locator(".iaiabl-explorer .widget-readout[contenteditable=true]:visible").count() == 0
    ex = _explorer(page, "Where does the model look")
    shown = lambda: ([a for a, _ in _ap(ex)], [a for a, _ in _visible(ex, ".iaiabl-readout", "data-top")])
    assert shown() == (["5"], ["5"]), shown()
    handle = ex.locator(".noUi-handle").first
    handle.focus()
    page.keyboard.press("ArrowRight")                   # the reader moves the slider by keyboard
    moved = _wait_change(page, shown, (["5"], ["5"]))
    assert moved == (["6"], ["6"]), moved
    assert "most active 6 %" in _ap(ex)[0][1]
    assert handle.get_attribute("aria-valuenow") in ("6", "6.0"), "the slider and the view disagree"
    select = ex.locator("select").first                 # and the case picker keeps the percentage
    case_before = _visible(ex, ".iaiabl-case", "data-row")
    select.select_option(index=_next_index(select))     # (the explorers share the case: it may have moved)
    assert _wait_change(page, lambda: _visible(ex, ".iaiabl-case", "data-row"), case_before) != case_before
    assert shown() == moved


def _next_index(select) -> int:
    """The option after the selected one (the first after the last): another case, whichever case
    the explorers of the page, which share it, show now."""
    return select.evaluate("s => (s.selectedIndex + 1) % s.options.length")


def test_picking_another_case_in_the_comparison(chapter):
    page = chapter["page"]
    ex = _explorer(page, "Two models, one case")
    before = _visible(ex, ".iaiabl-case", "data-row")
    select = ex.locator("select").first
    select.select_option(index=_next_index(select))
    after = _wait_change(page, lambda: _visible(ex, ".iaiabl-case", "data-row"), before)
    assert after != before
    assert len(_visible(ex, ".iaiabl-ap", "data-precision")) == 2


def test_equations_typeset_without_internet(served, browser):
    """The equations of chapter 3 are typeset by the vendored MathJax (book/_static/mathjax), with
    every request that leaves the local server refused: no raw LaTeX on the page."""
    page, refused, errors, console, loaded = _offline_page(browser, served, "03_prototype_similarity")
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
        assert not errors, f"page errors on chapter 3: {errors[:3]}"
    finally:
        page.context.close()


def test_no_error_in_the_console(chapter):
    """No uncaught error (e.g. "Identifier 'THEBE_JS_URL' has already been declared") and no
    console.error, after the reader has used every explorer (this test runs after them: pytest
    keeps the file's order)."""
    assert not chapter["errors"], f"page errors: {chapter['errors'][:3]}"
    assert not chapter["console"], f"console errors: {chapter['console'][:3]}"

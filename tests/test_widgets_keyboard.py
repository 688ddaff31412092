"""The explorers in a real browser, used by keyboard alone, on a page built here in seconds.

The page holds the four explorers of section 13.1 in static mode, built from the test run
(``tiny_run``) and embedded the way the book embeds them: the widget state and one view script per
explorer (``ipywidgets.embed``), rendered by the book's vendored widget manager
(``book/_static/ipywidgets/embed.js``), served from 127.0.0.1, every other request refused. The
book's own page is checked in test_widgets_browser.py (it needs the whole book built); this file
checks what a reader does with the keyboard and what the rendered pixels show, without that build.

Skipped where /usr/bin/chromium or playwright is missing (failed on CI), like the book's browser tests.
"""
from __future__ import annotations

import functools
import http.server
import json
import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-dev-shm-usage"]
MAX_PERCENT = 8


@pytest.fixture(scope="module")
def explorers(tiny_run, prepared):
    """The four explorers (static), built from the test run, and what a test needs to check them."""
    from iaiabl_lib import widgets
    from iaiabl_lib.train import load_run
    from iaiabl_lib.widgets import cases as C

    run = load_run(tiny_run, device="cpu")
    ds = C.dataset(run, prepared)
    rows = widgets.pick_cases(ds, "test", 3)
    fine = widgets.pick_cases(ds, "test", 2, prefer_fine=True)
    return {
        "run": run, "ds": ds,
        "case": widgets.case_explorer(run, ds, mode="static", cases=rows),
        "gallery": widgets.prototype_gallery(run, ds, n_nearest=1, mode="static"),
        "precision": widgets.activation_precision_explorer(run, ds, mode="static", cases=fine,
                                                           max_percent=MAX_PERCENT),
        "compare": widgets.fine_annotation_comparison(run, run, ds, mode="static", cases=fine),
    }


def _page(explorers: dict) -> str:
    """One HTML page embedding the explorers as myst-nb embeds them in a chapter."""
    import ipywidgets.embed as E

    order = ("case", "gallery", "precision", "compare")
    exs = [explorers[k] for k in order]
    state = E.dependency_state([w for ex in exs for w in (ex, *ex.links)], drop_defaults=True)
    data = E.embed_data(views=exs, drop_defaults=True, state=state)
    views = "".join(f"<section class='cell'><script type='application/vnd.jupyter.widget-view+json'>"
                    f"{json.dumps(spec)}</script></section>" for spec in data["view_specs"])
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'><title>explorers</title>"
            "<script src='_static/ipywidgets/embed.js'></script></head><body><main>"
            "<script type='application/vnd.jupyter.widget-state+json'>"
            f"{json.dumps(data['manager_state'])}</script>{views}</main></body></html>")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def served(explorers, tmp_path_factory):
    root = tmp_path_factory.mktemp("explorer_page")
    shutil.copytree(REPO / "book" / "_static" / "ipywidgets", root / "_static" / "ipywidgets")
    (root / "index.html").write_text(_page(explorers), encoding="utf-8")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
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
        pytest.skip("playwright is not installed (pip install -r requirements.txt)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, served):
    """A fresh page (each test starts from the page as loaded), every off-host request refused;
    after the test, no page error and no console error."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 1000})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.route("**/*", lambda r: r.continue_() if r.request.url.startswith((served, "data:")) else r.abort())
    pg.on("pageerror", lambda e: errors.append(e.message))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.goto(served + "index.html", wait_until="load")
    pg.wait_for_function("document.querySelectorAll('.iaiabl-explorer').length >= 4", timeout=60_000)
    pg.wait_for_timeout(300)
    yield pg
    ctx.close()
    assert not errors, f"page errors: {errors[:3]}"


def _explorer(page, title: str):
    loc = page.locator(".iaiabl-explorer", has_text=title)
    assert loc.count() >= 1, f"no explorer titled {title!r}"
    return loc.first


def _visible_attr(ex, selector: str, attribute: str) -> list[str]:
    return ex.evaluate("(root, [sel, a]) => Array.from(root.querySelectorAll(sel))"
                       ".filter(e => e.offsetParent !== null).map(e => e.getAttribute(a))", [selector, attribute])


def _wait_change(page, fn, before, timeout_ms: int = 5_000):
    for _ in range(timeout_ms // 100):
        now = fn()
        if now != before:
            return now
        page.wait_for_timeout(100)
    return fn()


# ---------------------------------------------------------------------------------------------
# number inputs (issue 22, item 6)
# ---------------------------------------------------------------------------------------------


def test_the_percentage_is_set_by_the_slider_and_written_beside_it(page):
    """No box on the static page reads a typed number: the percentage is the slider's, moved by
    the arrow keys, and written beside it; the view follows; the case picker keeps it."""
    assert page.locator(".iaiabl-explorer input[type=number]").count() == 0
    assert page.locator(".iaiabl-explorer .widget-readout[contenteditable=true]:visible").count() == 0
    ex = _explorer(page, "Where does the model look")
    shown = lambda: (_visible_attr(ex, ".iaiabl-ap", "data-top"), _visible_attr(ex, ".iaiabl-readout", "data-top"))
    assert shown() == (["5"], ["5"])
    assert ex.locator(".iaiabl-readout:visible").inner_text() == "5 % of the map"
    ex.locator(".noUi-handle").first.focus()
    page.keyboard.press("ArrowRight")
    assert _wait_change(page, shown, (["5"], ["5"])) == (["6"], ["6"])
    page.keyboard.press("End")
    assert _wait_change(page, shown, (["6"], ["6"])) == ([str(MAX_PERCENT)], [str(MAX_PERCENT)])
    assert f"most active {MAX_PERCENT} %" in ex.locator(".iaiabl-ap:visible").inner_text()
    case_before = _visible_attr(ex, ".iaiabl-case", "data-row")
    ex.locator("select").first.select_option(index=1)
    assert _wait_change(page, lambda: _visible_attr(ex, ".iaiabl-case", "data-row"), case_before) != case_before
    assert shown() == ([str(MAX_PERCENT)], [str(MAX_PERCENT)])


# ---------------------------------------------------------------------------------------------
# heat maps that can be seen (issue 22, item 3)
# ---------------------------------------------------------------------------------------------


def test_a_heat_map_stands_out_on_the_rendered_page(page, explorers):
    """The pixels Chromium paints: with the first heat map of the first case on, the top 5 % of the
    map stands out from the rest (the check of test_widgets, on a screenshot of the frame), and the
    legend shown beside it is that map's (its highest value is the map's)."""
    from io import BytesIO

    from PIL import Image
    from test_widgets import STANDS_OUT, top_stands_out

    ex = _explorer(page, "Case reader")
    reading = explorers["case"].reading(0)
    first = (reading.evidence_for + reading.evidence_against)[0]
    ex.locator(".iaiabl-picks label.iaiabl-pick-1").first.click()
    page.wait_for_timeout(200)
    frame = ex.locator(".iaiabl-frame").first
    shot = Image.open(BytesIO(frame.screenshot())).convert("RGB")
    amap = first.activation                                          # (S, S), the map at the image's pixels
    rgb = np.asarray(shot.resize(amap.shape[::-1], Image.Resampling.BOX), dtype=float)
    d = top_stands_out(rgb, amap)
    assert d >= STANDS_OUT, f"the top 5 % of prototype {first.index}'s map is {d:.0f} from the rest on screen"
    legend = ex.locator(".iaiabl-layer-legend:visible .iaiabl-legend")
    assert legend.count() == 1
    assert float(legend.get_attribute("data-vmax")) == pytest.approx(float(amap.max()), rel=1e-5)
    assert legend.get_attribute("data-scale") == "per map"
    ex.locator(".iaiabl-picks label.iaiabl-pick-0").first.click()       # no heat map: no legend shown
    page.wait_for_timeout(200)
    assert ex.locator(".iaiabl-layer-legend:visible").count() == 0
    plain = np.asarray(Image.open(BytesIO(frame.screenshot())).convert("RGB").resize(amap.shape[::-1],
                                                                                      Image.Resampling.BOX), dtype=float)
    assert top_stands_out(plain, amap) < d                             # the colour, not the image, stands out

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

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import serve_directory, wait_change

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
MAX_PERCENT = 8


def _wait_change(page, fn, before):
    return wait_change(page, fn, before, timeout_ms=5_000)


@pytest.fixture(scope="module")
def explorers(tiny_run, prepared):
    """The four explorers (static), built from the test run, and what a test needs to check them."""
    from iaiabl_lib import widgets
    from iaiabl_lib.train import load_run
    from iaiabl_lib.widgets import cases as C

    from iaiabl_lib.explain.context import other_views

    run = load_run(tiny_run, device="cpu")
    ds = C.dataset(run, prepared)
    # three cases: a lesion's two views (CC and MLO: the first's other view is the second) and one
    # more; the case reader, the precision explorer and the comparison share the chosen case
    picked = widgets.pick_cases(ds, "test", 4)
    tests = [int(i) for i in np.flatnonzero(ds.split == "test")]
    a = next(i for i in picked + tests if other_views(ds, i))
    b = other_views(ds, a)[0]
    rows = [a, b, next(i for i in picked + tests if i not in (a, b) and a not in other_views(ds, i))]
    exs = {
        "run": run, "ds": ds,
        "case": widgets.case_explorer(run, ds, mode="static", cases=rows),
        "gallery": widgets.prototype_gallery(run, ds, n_nearest=1, mode="static"),
        "precision": widgets.activation_precision_explorer(run, ds, mode="static", cases=rows,
                                                           max_percent=MAX_PERCENT),
        "compare": widgets.fine_annotation_comparison(run, run, ds, mode="static", cases=rows),
    }
    widgets.share_case(exs["case"], exs["precision"], exs["compare"])
    return exs


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


@pytest.fixture(scope="module")
def served(explorers, tmp_path_factory):
    root = tmp_path_factory.mktemp("explorer_page")
    shutil.copytree(REPO / "book" / "_static" / "ipywidgets", root / "_static" / "ipywidgets")
    (root / "index.html").write_text(_page(explorers), encoding="utf-8")
    with serve_directory(root) as url:
        yield url


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


# ---------------------------------------------------------------------------------------------
# keyboard and screen readers (issue 22, item 7)
# ---------------------------------------------------------------------------------------------

_CONTROLS = ("label[role=button], select, button, summary, input:not([type=hidden]), textarea, "
             "[tabindex]:not([tabindex='-1'])")

_MARK_CONTROLS = """(sel) => {
    // every control a reader can see in an explorer, numbered; hidden views' controls are not counted
    const shown = e => !!(e.offsetWidth || e.offsetHeight || e.getClientRects().length)
                       && getComputedStyle(e).visibility !== 'hidden';
    let n = 0;
    const out = [];
    document.querySelectorAll('.iaiabl-explorer').forEach(ex => ex.querySelectorAll(sel).forEach(e => {
        if (!shown(e) || e.disabled) return;
        e.dataset.kb = String(n++);
        out.push([e.dataset.kb, e.tagName, e.className.toString(), e.getAttribute('role') || '']);
    }));
    return out;
}"""

_ACTIVE = """() => { const a = document.activeElement;
    return a ? [a.dataset.kb || null, a.tagName, a.className.toString(), a.getAttribute('aria-pressed')] : null; }"""


def _tab_to(page, test_js: str, max_tabs: int = 400) -> int:
    """Press Tab until ``test_js`` (a function of document.activeElement) holds; the presses."""
    for n in range(1, max_tabs + 1):
        page.keyboard.press("Tab")
        if page.evaluate(f"() => {{ const a = document.activeElement; return !!a && ({test_js})(a); }}"):
            return n
    raise AssertionError(f"{max_tabs} presses of Tab never reached an element where {test_js}")


def _pressed(ex, selector: str) -> list[str]:
    """aria-pressed of the buttons shown (an enlarged image, fixed in the window, included)."""
    return ex.evaluate("(root, sel) => Array.from(root.querySelectorAll(sel))"
                       ".filter(e => e.getClientRects().length > 0).map(e => e.getAttribute('aria-pressed'))", selector)


def _enlarged(ex) -> bool:
    return ex.locator(".iaiabl-frame:visible").first.evaluate("e => getComputedStyle(e).position") == "fixed"


def test_tab_reaches_every_control_of_every_explorer(page):
    """Every control a reader can see in the four explorers (the heat-map, overlay, enlarge and
    what-if buttons, the image itself, the pickers, the slider, the ground-truth summary) is reached
    by Tab alone; no control works by mouse only (every label tied to an input is a keyboard
    button), and every button says whether it is pressed."""
    controls = page.evaluate(_MARK_CONTROLS, _CONTROLS)
    kinds = {c[2].split()[0] for c in controls if c[1] == "LABEL"}
    for kind in ("iaiabl-pick-0", "iaiabl-pick-1", "iaiabl-zoom-label", "iaiabl-frame", "iaiabl-show-1",
                 "iaiabl-first-0", "iaiabl-first-1", "iaiabl-second-1"):
        assert kind in kinds, f"no visible {kind} button to test ({sorted(kinds)})"
    # a label whose input is hidden is the only way to that input: it must be a keyboard button
    proxies = page.evaluate("() => Array.from(document.querySelectorAll('.iaiabl-explorer label[for]'))"
                            ".filter(l => l.control && getComputedStyle(l.control).display === 'none')"
                            ".map(l => [l.getAttribute('tabindex'), l.getAttribute('role'), l.getAttribute('aria-pressed'),"
                            " String(l.control.checked)])")
    assert len(proxies) > 20
    bad = [p for p in proxies if p[:2] != ["0", "button"] or p[2] != p[3]]
    assert not bad, f"{len(bad)} labels of hidden inputs are not keyboard buttons saying their state: {bad[:3]}"
    want = {c[0] for c in controls}
    seen: set[str] = set()
    for _ in range(3 * len(controls) + 50):
        page.keyboard.press("Tab")
        active = page.evaluate(_ACTIVE)
        if active and active[0] is not None:
            seen.add(active[0])
        if seen >= want:
            break
    missed = [c for c in controls if c[0] not in seen]
    assert not missed, f"Tab never reaches {len(missed)} of {len(controls)} controls, e.g. {missed[:4]}"


def test_heat_maps_and_enlarge_work_by_keyboard_alone(page):
    """Case reader, keyboard only: Enter on a heat-map button shows its map and presses it (the
    others released); Space on "no heat map" hides it again; Enter on "enlarge" and Space on the
    image enlarge the image to the window, and Escape shrinks it (focus where it was)."""
    ex = _explorer(page, "Case reader")
    heats = lambda: _visible_attr(ex, "img.iaiabl-heat", "data-layer")
    picks = lambda: _pressed(ex, ".iaiabl-reader .iaiabl-picks label[class^=iaiabl-pick-]")
    assert heats() == [] and picks()[0] == "true" and set(picks()[1:]) == {"false"}
    _tab_to(page, "a => a.matches('label.iaiabl-pick-1') && a.offsetParent !== null")
    page.keyboard.press("Enter")
    layer = page.evaluate("() => document.activeElement.dataset.layer")
    assert _wait_change(page, heats, []) == [layer]
    assert picks()[:2] == ["false", "true"] and set(picks()[2:]) <= {"false"}
    assert ex.locator(".iaiabl-layer-legend:visible").count() == 1
    page.keyboard.press("Shift+Tab")                                  # back to "no heat map"
    assert page.evaluate("() => document.activeElement.matches('label.iaiabl-pick-0')")
    page.keyboard.press(" ")
    assert _wait_change(page, heats, [layer]) == [] and picks()[0] == "true"
    zoom = lambda: _pressed(ex, "label.iaiabl-zoom-label, label.iaiabl-frame")
    assert zoom() == ["false", "false"] and not _enlarged(ex)
    _tab_to(page, "a => a.matches('label.iaiabl-zoom-label') && a.offsetParent !== null")
    page.keyboard.press("Enter")
    page.wait_for_timeout(150)
    assert _enlarged(ex) and zoom() == ["true", "true"]
    assert page.evaluate("() => scrollY") == page.evaluate("() => scrollY")
    page.keyboard.press("Escape")
    page.wait_for_timeout(150)
    assert not _enlarged(ex) and zoom() == ["false", "false"]
    assert page.evaluate("() => document.activeElement.matches('label.iaiabl-zoom-label')")
    page.keyboard.press("Tab")                                        # the image itself
    active = page.evaluate(_ACTIVE)
    assert active[1] == "LABEL" and "iaiabl-frame" in active[2]
    y = page.evaluate("() => scrollY")
    page.keyboard.press(" ")
    page.wait_for_timeout(150)
    assert _enlarged(ex) and zoom() == ["true", "true"]
    assert page.evaluate("() => scrollY") == y, "Space scrolled the page instead of pressing the image"
    page.keyboard.press("Escape")
    page.wait_for_timeout(150)
    assert not _enlarged(ex) and zoom() == ["false", "false"]
    page.keyboard.press("Escape")                                     # a second Escape changes nothing
    assert not _enlarged(ex)


def test_what_if_works_by_keyboard_alone(page, explorers):
    """Case reader, keyboard only: Enter on a first-row prototype dismisses it, Space on a
    second-row one dismisses it as well; the buttons say which are pressed and the table shows the
    pair's reading."""
    ex = _explorer(page, "Case reader")
    dismissed = lambda: _visible_attr(ex, ".iaiabl-dismissed", "data-dismissed")
    assert dismissed() == [""]
    wi = explorers["case"].whatif[0]
    assert len(wi.offered) >= 2, "the first case offers fewer than two prototypes to dismiss"
    a, b = wi.offered[:2]
    _tab_to(page, "a => a.matches('label.iaiabl-first-1') && a.offsetParent !== null")
    page.keyboard.press("Enter")
    assert _wait_change(page, dismissed, [""]) == [str(a)]
    assert _pressed(ex, "label[class^=iaiabl-first-]")[:2] == ["false", "true"]
    _tab_to(page, "a => a.matches('label.iaiabl-second-2') && a.offsetParent !== null", max_tabs=20)
    page.keyboard.press(" ")
    assert _wait_change(page, dismissed, [str(a)]) == [",".join(map(str, sorted((a, b))))]
    assert _pressed(ex, "label[class^=iaiabl-second-]")[:3] == ["false", "false", "true"]
    after = ex.locator(".iaiabl-wi:visible .iaiabl-after").all_inner_texts()
    assert after == re.findall(r"<b class='iaiabl-after'>([^<]+)</b>", wi.views[frozenset((a, b))])


def test_overlay_toggles_and_the_truth_work_by_keyboard_alone(page):
    """An overlay toggle (the marks of the comparison) switches on and off with Enter and Space and
    says so; the recorded margin opens with Enter on its summary."""
    ex = _explorer(page, "Two models, one case")
    marks = lambda: _visible_attr(ex, "img.iaiabl-marks", "data-layer")
    assert marks() == []
    _tab_to(page, "a => a.matches('label.iaiabl-show-1') && !!a.closest('.iaiabl-explorer') "
                  "&& a.closest('.iaiabl-explorer').textContent.includes('Two models, one case') && a.offsetParent !== null")
    assert page.evaluate("() => document.activeElement.getAttribute('aria-pressed')") == "false"
    page.keyboard.press("Enter")
    assert _wait_change(page, marks, []) == ["marks"]
    assert page.evaluate("() => document.activeElement.getAttribute('aria-pressed')") == "true"
    page.keyboard.press(" ")
    assert _wait_change(page, marks, ["marks"]) == []
    assert page.evaluate("() => document.activeElement.getAttribute('aria-pressed')") == "false"
    case = _explorer(page, "Case reader")
    assert case.locator(".iaiabl-agreement:visible").count() == 0
    page.evaluate("() => document.activeElement.blur()")
    _tab_to(page, "a => a.tagName === 'SUMMARY' && a.offsetParent !== null "
                  "&& !!a.closest('.iaiabl-explorer') && a.closest('.iaiabl-explorer').textContent.includes('Case reader')")
    page.keyboard.press("Enter")
    said = case.locator(".iaiabl-agreement:visible")
    assert said.count() == 1, "the recorded margin opened without saying whether the model agrees"
    text, agrees = said.inner_text(), said.get_attribute("data-agrees")
    assert ("agrees with the record" in text) == (agrees == "1")
    assert ("the record says" in text) == (agrees == "0")


def test_every_image_says_what_it_shows(page):
    """Every image of the explorers, shown or not, has an alt text that says what it shows: words,
    not a file name or a data URI, and a heat map's names its prototype and its scale."""
    alts = page.evaluate("() => Array.from(document.querySelectorAll('.iaiabl-explorer img'))"
                         ".map(i => [i.className, i.getAttribute('alt') || ''])")
    assert len(alts) > 20
    for cls, alt in alts:
        assert len(alt.split()) >= 4, (cls, alt)
        assert not re.search(r"data:|\.png|\.jpe?g|/", alt.split(":")[0] + alt[-6:]), (cls, alt)
    heat = [alt for cls, alt in alts if "iaiabl-heat" in cls]
    assert heat and all(re.search(r"prototype \d+", a) and re.search(r"\d\.\d", a) for a in heat), heat[:3]
    frames = page.evaluate("() => Array.from(document.querySelectorAll('.iaiabl-explorer label.iaiabl-frame'))"
                           ".map(l => l.getAttribute('aria-label'))")
    assert frames and all(f and "region of interest" in f and "enlarge" in f for f in frames), frames[:2]


# ---------------------------------------------------------------------------------------------
# what if next to the image (issue 22, item 5)
# ---------------------------------------------------------------------------------------------

_PLACES = """(ex) => {
    const shown = e => e.getClientRects().length > 0;
    const frame = Array.from(ex.querySelectorAll('.iaiabl-frame')).find(shown).getBoundingClientRect();
    const table = Array.from(ex.querySelectorAll('.iaiabl-wi .iaiabl-dismiss-table')).find(shown).getBoundingClientRect();
    const row = Array.from(ex.querySelectorAll('.iaiabl-first-row')).find(shown).getBoundingClientRect();
    return {frame: [frame.left, frame.top, frame.right, frame.bottom], table: [table.left, table.top, table.right, table.bottom],
            buttons: [row.left, row.top, row.right, row.bottom], height: innerHeight};
}"""


@pytest.mark.parametrize("width", [1280, 800])
def test_what_if_is_read_next_to_the_image(browser, served, width):
    """With the image at the top of a 1000-pixel-high window, the dismiss buttons and the what-if
    table are in the window with it, before and after a dismissal: beside the image on a wide page,
    under it on a page as narrow as the book's text column."""
    ctx = browser.new_context(viewport={"width": width, "height": 1000})
    try:
        pg = ctx.new_page()
        pg.route("**/*", lambda r: r.continue_() if r.request.url.startswith((served, "data:")) else r.abort())
        pg.goto(served + "index.html", wait_until="load")
        pg.wait_for_function("document.querySelectorAll('.iaiabl-explorer').length >= 4", timeout=60_000)
        ex = _explorer(pg, "Case reader")
        ex.locator(".iaiabl-frame").first.evaluate("e => e.scrollIntoView({block: 'start'})")
        for press in (False, True):
            if press:                               # dismiss the first prototype, by keyboard
                ex.locator(".iaiabl-first-row label.iaiabl-first-1").first.focus()
                pg.keyboard.press("Enter")
                pg.wait_for_timeout(200)
                assert _visible_attr(ex, ".iaiabl-dismissed", "data-dismissed") != [""]
            at = ex.evaluate(_PLACES)
            frame, table, buttons = at["frame"], at["table"], at["buttons"]
            assert frame[1] >= -1 and frame[3] <= at["height"], at
            assert buttons[3] <= at["height"] and table[3] <= at["height"], \
                f"the what-if table ends at {table[3]:.0f} px, below the window ({at['height']} px): {at}"
            if width >= 1200:
                assert table[0] >= frame[2] and buttons[0] >= frame[2], f"not beside the image: {at}"
            else:
                assert table[1] >= frame[3], f"not under the image: {at}"
    finally:
        ctx.close()


# ---------------------------------------------------------------------------------------------
# ordering the case list (issue 22, item 4)
# ---------------------------------------------------------------------------------------------


def _wait_for(page, fn, want, timeout_ms: int = 5_000):
    """Poll ``fn`` until it returns ``want`` (its last value after ``timeout_ms``)."""
    for _ in range(timeout_ms // 50):
        got = fn()
        if got == want:
            return got
        page.wait_for_timeout(50)
    return fn()


_SELECTED = "() => document.activeElement.selectedOptions[0].textContent.replace(/\\u00a0/g, ' ')"


def test_the_case_list_is_ordered_by_keyboard(page, explorers):
    """Keyboard only: the order picker set to "the model's call" keeps the chosen case, its list
    showing that order (the case chosen in it); the next case in that list is the order's next; a
    view drawn again through another order still works (its heat-map button) and no element id is
    on the page twice."""
    ex = _explorer(page, "Case reader")
    case = explorers["case"]
    name, perm, labels = case.orders[1]
    rows = lambda: _visible_attr(ex, ".iaiabl-case", "data-row")
    first = [str(case.rows[0])]
    assert rows() == first
    _tab_to(page, "a => a.tagName === 'SELECT' && !!a.closest('.iaiabl-explorer') "
                  "&& a.closest('.iaiabl-explorer').textContent.includes('Case reader')")
    assert page.evaluate(_SELECTED) == case.orders[0][0]
    page.keyboard.press("ArrowDown")                                  # the order: the model's call
    assert page.evaluate(_SELECTED) == name
    page.keyboard.press("Tab")                                        # its case list
    shown = page.evaluate("() => Array.from(document.activeElement.options).map(o => o.textContent.replace(/\\u00a0/g, ' '))")
    assert shown == labels
    k = perm.index(0)                                                 # the chosen case, kept
    assert _wait_for(page, lambda: (rows(), page.evaluate(_SELECTED)), (first, labels[k])) == (first, labels[k])
    nxt = k + 1 if k + 1 < len(perm) else k - 1
    page.keyboard.press("ArrowDown" if nxt > k else "ArrowUp")
    assert _wait_change(page, rows, first) == [str(case.rows[perm[nxt]])]
    ids = page.evaluate("() => Array.from(document.querySelectorAll('[id]')).map(e => e.id)")
    assert len(ids) == len(set(ids)), "an element id is on the page twice"
    heats = lambda: _visible_attr(ex, "img.iaiabl-heat", "data-layer")
    _tab_to(page, "a => a.matches('label.iaiabl-pick-1') && a.offsetParent !== null")
    page.keyboard.press("Enter")
    assert _wait_change(page, heats, []) == [page.evaluate("() => document.activeElement.dataset.layer")]


# ---------------------------------------------------------------------------------------------
# clinical context (issue 22, items 4 and 8)
# ---------------------------------------------------------------------------------------------

_SHARED = ("Case reader", "Where does the model look", "Two models, one case")


def _shown_rows(page) -> list[list[str]]:
    return [_visible_attr(_explorer(page, t), ".iaiabl-case", "data-row") for t in _SHARED]


def test_the_other_view_and_the_shared_case_work_by_keyboard(page, explorers):
    """Keyboard only: Enter on the case reader's button to the other view of the lesion shows that
    view, the focus on the case list, and the two explorers that share the case show it too; Space
    on the button there goes back; a case chosen in the comparison's list is chosen in the reader."""
    a, b, c = (str(r) for r in explorers["case"].rows)
    assert _shown_rows(page) == [[a]] * 3
    _tab_to(page, "a => a.matches('button.iaiabl-choose-case') && a.offsetParent !== null")
    page.keyboard.press("Enter")
    assert _wait_change(page, lambda: _shown_rows(page), [[a]] * 3) == [[b]] * 3
    assert page.evaluate("() => document.activeElement.tagName") == "SELECT"
    _tab_to(page, "a => a.matches('button.iaiabl-choose-case') && a.offsetParent !== null")
    page.keyboard.press(" ")
    assert _wait_change(page, lambda: _shown_rows(page), [[b]] * 3) == [[a]] * 3
    compare = _explorer(page, "Two models, one case")
    compare.locator("select").first.focus()
    page.keyboard.press("End")
    assert _wait_change(page, lambda: _shown_rows(page), [[a]] * 3) == [[c]] * 3


def test_a_case_chosen_in_an_ordered_list_is_shared_by_keyboard(page, explorers):
    """Keyboard only, on the static page: with the case reader's list ordered by disagreement with
    the record (a separate list, whose positions are other cases), a case chosen there is chosen in
    the two explorers that share the case; a case chosen in the comparison is then chosen in the
    reader's ordered list (the list says so, and the reader shows it); back in case-number order,
    the reader keeps it."""
    case = explorers["case"]
    rows = [str(r) for r in case.rows]
    name, perm, labels = case.orders[3]
    ex = _explorer(page, "Case reader")
    reader_list = lambda: ex.evaluate("(root) => { const s = Array.from(root.querySelectorAll("
                                      "'.iaiabl-case-picker select')).filter(e => e.offsetParent !== null)[0];"
                                      " return s ? s.selectedOptions[0].textContent.replace(/\\u00a0/g, ' ') : null; }")
    assert _shown_rows(page) == [[rows[0]]] * 3
    ex.locator(".iaiabl-order-picker select").focus()
    page.keyboard.press("End")                                        # the order: disagreement first
    assert page.evaluate(_SELECTED) == name
    k = perm.index(0)
    assert _wait_for(page, reader_list, labels[k]) == labels[k]       # the case kept, in the new list
    page.keyboard.press("Tab")                                        # the ordered case list
    assert page.evaluate(_SELECTED) == labels[k]
    key, target = ("End", perm[-1]) if k != len(perm) - 1 else ("Home", perm[0])
    page.keyboard.press(key)
    assert _wait_for(page, lambda: _shown_rows(page), [[rows[target]]] * 3) == [[rows[target]]] * 3, \
        "a case chosen in the reader's ordered list is not chosen in the explorers that share it"
    compare = _explorer(page, "Two models, one case")
    compare.locator("select").first.focus()
    other = next(j for j in (0, len(rows) - 1) if j != target)
    page.keyboard.press("Home" if other == 0 else "End")
    assert _wait_for(page, lambda: _shown_rows(page), [[rows[other]]] * 3) == [[rows[other]]] * 3
    assert reader_list() == labels[perm.index(other)]
    ex.locator(".iaiabl-order-picker select").focus()
    page.keyboard.press("Home")                                       # back to case-number order
    assert _wait_for(page, reader_list, case.orders[0][2][other]) == case.orders[0][2][other]
    assert _shown_rows(page) == [[rows[other]]] * 3


def test_the_other_view_button_works_in_every_order_of_the_list(page, explorers):
    """With the case list ordered otherwise (the order picker), the button still shows the other
    view: it chooses the case in the list the reader sees."""
    a, b = (str(r) for r in explorers["case"].rows[:2])
    ex = _explorer(page, "Case reader")
    shown = lambda: _visible_attr(ex, ".iaiabl-case", "data-row")
    ex.locator("select").first.select_option(index=3)
    page.wait_for_timeout(300)
    first = shown()
    if first != [a]:                                                # choose the first view in this order
        labels = ex.evaluate("(root) => Array.from(root.querySelectorAll('.iaiabl-case-picker select'))"
                             ".filter(s => s.offsetParent !== null)[0].options.length")
        for k in range(labels):
            ex.locator(".iaiabl-case-picker select:visible").first.select_option(index=k)
            page.wait_for_timeout(200)
            if shown() == [a]:
                break
    assert shown() == [a]
    ex.locator("button.iaiabl-choose-case:visible").first.focus()
    page.keyboard.press("Enter")
    assert _wait_change(page, shown, [a]) == [b]


def test_the_whole_mammogram_is_beside_the_region(page):
    """The whole mammogram, shrunk, is drawn beside the region of interest (to its right, its top
    within the frame's height) with an alt text that names the scale bar."""
    ex = _explorer(page, "Case reader")
    at = ex.evaluate("""(root) => {
        const shown = e => e.getClientRects().length > 0;
        const f = Array.from(root.querySelectorAll('.iaiabl-frame')).find(shown).getBoundingClientRect();
        const w = Array.from(root.querySelectorAll('.iaiabl-whole img')).find(shown);
        const r = w.getBoundingClientRect();
        return {frame: [f.left, f.top, f.right, f.bottom], whole: [r.left, r.top, r.right, r.bottom],
                alt: w.getAttribute('alt'), natural: [w.naturalWidth, w.naturalHeight]};
    }""")
    frame, whole = at["frame"], at["whole"]
    assert whole[0] >= frame[2] and frame[1] - 60 <= whole[1] <= frame[3], at
    assert at["natural"][1] > 100 and whole[3] - whole[1] == pytest.approx(at["natural"][1], abs=1)
    assert "scale bar is" in at["alt"] and "boxed in yellow" in at["alt"]

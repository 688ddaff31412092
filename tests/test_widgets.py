"""iaiabl_lib.widgets: the explorers react to their controls (live mode, kernel callbacks) and
precompute the right views, tied to their controls by browser-side links (static mode).

Live mode is driven the way a reader drives it: a control's value is set and the displayed HTML is
read back. Numbers shown are compared with what the library computes (explain, metrics, the
model's heads), colours with the one similarity scale of plots. The browser side of static mode
is tested on the built book in test_widgets_browser.py.
"""
from __future__ import annotations

import base64
import html as html_mod
import io
import re
import types

import numpy as np
import pytest
import torch

import ipywidgets as W

from iaiabl_lib import explain, metrics, plots, widgets
from iaiabl_lib.config import MARGINS
from iaiabl_lib.errors import InputError
from iaiabl_lib.explain import context as X
from iaiabl_lib.widgets import access as A
from iaiabl_lib.widgets import cases as C
from iaiabl_lib.widgets import images as I
from iaiabl_lib.widgets import words as T


@pytest.fixture(scope="module")
def run(tiny_run):
    from iaiabl_lib.train import load_run

    return load_run(tiny_run, device="cpu")


@pytest.fixture(scope="module")
def ds(run, prepared):
    return C.dataset(run, prepared)


def _pcts(html: str, cls: str) -> list[str]:
    """The bold percentages shown in the probability lines of class ``cls``, in order."""
    return re.findall(rf"<div class='iaiabl-prob {cls}[\w-]*'>.*?<b>([^<]+%)</b>", html)


def _before_after(html: str) -> tuple[list[str], list[str]]:
    """The dismissal table: probabilities as read, and after the dismissal (margins, then malignancy)."""
    return (re.findall(r"<span class='iaiabl-before'>([^<]+)</span>", html),
            re.findall(r"<b class='iaiabl-after'>([^<]+)</b>", html))


def _text(html: str) -> str:
    """What a reader reads: the view without tags and image data."""
    import html as H

    return H.unescape(re.sub(r"<[^>]+>", " ", re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)))


def _pngs(html: str) -> list:
    from PIL import Image

    return [Image.open(io.BytesIO(base64.b64decode(b)))
            for b in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)]


def _heads(run, similarity, keep):
    """What the model's heads compute, written out here: h1 then h2 on s ⊙ keep."""
    m = run.model
    with torch.no_grad():
        s = torch.as_tensor(similarity * keep, dtype=torch.float32)[None]
        logits = m.margin_head(s)
        mal = torch.sigmoid(m.malignancy_head(logits)).item()
    return torch.softmax(logits[0], 0).numpy(), mal


def _shown(run, similarity, dismissed) -> list[str]:
    keep = np.ones(len(similarity), np.float32)
    keep[list(dismissed)] = 0
    prob, mal = _heads(run, similarity, keep)
    return [T.pct(p) for p in prob] + [T.pct(mal)]


def _test_cases(ds, n=2):
    rows = widgets.pick_cases(ds, "test", n)
    assert len(rows) == n
    return rows


# ---------------------------------------------------------------------------------------------
# mode, Sphinx extension
# ---------------------------------------------------------------------------------------------


def test_resolve_mode_rule(monkeypatch):
    from iaiabl_lib.widgets import mode as M

    monkeypatch.delenv(widgets.STATIC_ENV, raising=False)
    assert widgets.resolve_mode("live") == "live"
    assert widgets.resolve_mode("static") == "static"
    assert widgets.resolve_mode("auto") == "static"          # no kernel here: nothing to call back
    monkeypatch.setattr(M, "_in_kernel", lambda: True)
    assert widgets.resolve_mode("auto") == "live"            # a notebook with a kernel
    for value, mode in (("1", "static"), ("true", "static"), ("static", "static"), ("0", "live"), ("no", "live")):
        monkeypatch.setenv(widgets.STATIC_ENV, value)
        assert widgets.resolve_mode("auto") == mode, value
    with pytest.raises(ValueError, match="mode"):
        widgets.resolve_mode("kernel")


def _fake_app():
    calls = {"events": {}}
    app = types.SimpleNamespace(
        add_config_value=lambda name, default, rebuild: calls.setdefault(name, default),
        connect=lambda event, fn: calls["events"].setdefault(event, fn))
    return app, calls


def test_sphinx_extension_sets_static_for_the_book_build(monkeypatch):
    monkeypatch.delenv(widgets.STATIC_ENV, raising=False)
    app, calls = _fake_app()
    meta = widgets.setup(app)                     # the name _config.yml lists: iaiabl_lib.widgets
    assert meta["parallel_read_safe"]
    assert calls["iaiabl_widgets_mode"] == "static"
    calls["events"]["config-inited"](app, types.SimpleNamespace(iaiabl_widgets_mode="static"))
    assert widgets.resolve_mode("auto") == "static"
    with pytest.raises(ValueError):
        calls["events"]["config-inited"](app, types.SimpleNamespace(iaiabl_widgets_mode="sometimes"))


def test_sphinx_page_hook_writes_each_script_once_and_a_noscript_message():
    """sphinx-thebe's inline configuration reaches the page twice (file name None, then ""): the
    hook keeps one; every embedded widget gets a <noscript> message; the theme gets a mode."""
    from sphinx.builders.html._assets import _JavaScript

    app, calls = _fake_app()
    widgets.setup(app)
    hook = calls["events"]["html-page-context"]
    body = "const THEBE_JS_URL = 'x'"
    view = '<script type="application/vnd.jupyter.widget-view+json">{"model_id": "a"}</script>'
    ctx = {"script_files": [_JavaScript("_static/a.js"), _JavaScript(None, body=body),
                            _JavaScript("", body=body), _JavaScript("_static/a.js"),
                            _JavaScript("", body="other")],
           "body": f"<p>text</p>{view}<p>more</p>{view}", "default_mode": ""}
    hook(None, "book/13_explorer", "page.html", ctx, None)
    assert [(j.filename, j.attributes.get("body")) for j in ctx["script_files"]] == \
        [("_static/a.js", None), (None, body), ("", "other")]
    assert ctx["body"].count("<noscript>") == 2
    assert ctx["body"].count(widgets.sphinx.NOSCRIPT + view) == 2
    assert "needs JavaScript" in widgets.sphinx.NOSCRIPT
    assert ctx["default_mode"] == "auto"
    plain = {"body": "<p>no widget</p>", "default_mode": "dark"}
    hook(None, "book/intro", "page.html", plain, None)
    assert plain == {"body": "<p>no widget</p>", "default_mode": "dark"}


def test_mode_line_and_demo_note(run, ds):
    row = _test_cases(ds, 1)
    for mode, line in (("live", widgets.LIVE_LINE), ("static", widgets.STATIC_LINE)):
        ex = widgets.case_explorer(run, ds, mode=mode, cases=row)
        assert ex.mode == mode
        assert line in ex.mode_line.value
        assert ex.mode_line in ex.children
        header = ex.children[0].value
        assert "small demonstration model" in header and "synthetic mammograms" in header
        assert "not medical findings" in header


# ---------------------------------------------------------------------------------------------
# words, names, ground truth
# ---------------------------------------------------------------------------------------------


def test_clinical_words():
    assert T.pct(0.004) == "below 1 %" and T.pct(0.006) == "1 %" and T.pct(0.996) == "above 99 %"
    assert T.pct(0) == "0 %" and T.pct(1) == "100 %" and T.pct(0.62) == "62 %"
    assert T.article("indistinct") == "an" and T.article("spiculated") == "a"
    assert T.points_sentence(1.234, "spiculated") == "adds 1.23 points for spiculated"
    assert T.points_sentence(-0.08, "spiculated") == "takes 0.08 points away from spiculated"
    assert T.change(0.5, 0.502) == "no visible change"
    assert T.change(0.5, 0.62) == "+12 percentage points"
    # the columns add up: 15 % -> 21 % reads +6, although the figures differ by 5.2 points (issue 22)
    assert (T.pct(0.154), T.pct(0.206), T.change(0.154, 0.206)) == ("15 %", "21 %", "+6 percentage points")
    assert T.change(0.206, 0.154) == "-6 percentage points"
    assert T.change(0.003, 0.006) == "up by less than 1 percentage point"     # "below 1 %" -> "1 %"
    assert T.change(0.003, 0.013) == "+1 percentage point"


def test_cases_are_numbered_and_ground_truth_waits_for_a_click(run, ds, monkeypatch):
    rows = _test_cases(ds, 2)
    test_rows = list(np.flatnonzero(ds.split == "test"))
    assert C.case_number(ds, rows[1]) == f"test case {test_rows.index(rows[1]) + 1}"
    ex = widgets.case_explorer(run, ds, mode="static", cases=rows)
    labels = [lab for lab, _ in ex.controls["case"].options]
    assert labels == [C.case_number(ds, i).capitalize() for i in rows]
    assert not any(re.search(r"P_\d{5}", lab) or "recorded" in lab for lab in labels)
    html = ex.current_html()
    truth = f"Recorded margin: <b>{MARGINS[int(ds.labels[rows[0]])]}</b>"
    # the recorded margin appears only inside the closed <details> element
    assert html.count(truth) == 1
    details = re.search(r"<details class='iaiabl-truth'>(.*?)</details>", html, re.S).group(1)
    assert truth in details and "<details class='iaiabl-truth' open" not in html
    # dataset IDs: only in the details line, shown for synthetic data, never when refused
    assert C.is_synthetic(ds)
    outside = re.sub(r"<div class='iaiabl-details'>.*?</div>", "", html)
    assert ds.ids[rows[0]] in html and ds.ids[rows[0]] not in outside
    assert not re.search(r"P_\d{5}", outside)
    # ... and labelled as what it is: the data set's de-identified code, never a patient's identity
    line = re.search(r"<div class='iaiabl-details'>(.*?)</div>", html).group(1)
    assert line.startswith(f"Data set ID {ds.ids[rows[0]]} (synthetic data, made up in CBIS-DDSM's de-identified form")
    assert "no patient's identity is shown" in line and "Dataset ID" not in html
    hidden = widgets.case_explorer(run, ds, mode="static", cases=rows, show_dataset_ids=False)
    assert not re.search(r"P_\d{5}", hidden.current_html())
    monkeypatch.setattr(C, "is_synthetic", lambda _ds: False)      # real data: hidden by default
    real = widgets.case_explorer(run, ds, mode="static", cases=rows)
    assert not re.search(r"P_\d{5}", real.current_html())
    asked = widgets.case_explorer(run, ds, mode="static", cases=rows, show_dataset_ids=True)
    assert ds.ids[rows[0]] in asked.current_html()


# ---------------------------------------------------------------------------------------------
# images: lossless layers, one colour scale, large reading view
# ---------------------------------------------------------------------------------------------


def test_heat_maps_are_their_legends_colours_losslessly():
    """A heat map is encoded losslessly in the colours of its own scale (fitted to the map), opaque
    where coloured and transparent below the scale's start; its legend states that scale's numbers
    and its gradient is the same colours."""
    yy, xx = np.mgrid[:64, :64]
    amap = 0.02 + 0.3 * np.exp(-((yy - 20) ** 2 + (xx - 40) ** 2) / 60.0)      # peaks at 0.32, like issue 22's model
    scale = plots.fit_heat_scale(amap)
    assert (scale.low, scale.high) == (amap.min(), amap.max())
    assert scale.start == pytest.approx(amap.min() + plots.HEAT_FLOOR * (amap.max() - amap.min()))
    (img,) = _pngs(I.similarity_uri(amap))
    assert img.mode == "RGBA"                                       # no palette: nothing bands
    np.testing.assert_array_equal(np.asarray(img), plots.heat_rgba(amap, scale))
    alpha = np.asarray(img)[..., 3]
    assert set(np.unique(alpha)) == {0, 255}                        # opaque or absent, never half
    np.testing.assert_array_equal(alpha == 255, amap >= scale.start)
    legend = I.colour_legend(scale)
    assert f"data-cmap='{plots.SIMILARITY_CMAP}'" in legend and "data-scale='per map'" in legend
    assert f"data-vmin='{scale.start:.6g}'" in legend and f"data-vmax='{scale.high:.6g}'" in legend
    assert f"data-low='{scale.low:.6g}'" in legend
    text = _text(legend)
    for v in (scale.start, scale.high, scale.low, (scale.start + scale.high) / 2):
        assert f"{v:.2g}" in text, (v, text)                        # the legend's numbers are the map's
    assert "no colour below" in text and "fitted to this map" in text
    stops = np.array([[int(v) for v in s] for s in re.findall(r"rgb\((\d+), (\d+), (\d+)\)", legend)])
    np.testing.assert_array_equal(stops, plots.heat_rgba(np.linspace(scale.start, scale.high, len(stops)), scale)[:, :3])
    flat = plots.fit_heat_scale(np.full((8, 8), 0.5))
    assert flat.flat and not plots.heat_rgba(np.full((8, 8), 0.5), flat)[..., 3].any()
    assert "nothing is coloured" in I.colour_legend(flat)
    with pytest.raises(ValueError, match="no finite value"):
        plots.fit_heat_scale(np.full(4, np.nan))


def _composite(layer_png, grey: np.ndarray) -> np.ndarray:
    """What the reader sees: an RGBA heat layer drawn over the grey image (same pixels), float RGB."""
    lay = np.asarray(layer_png.convert("RGBA")).astype(float)
    g = grey.astype(float) * (255.0 if grey.max() <= 1 else 1.0)
    g = np.repeat(g[..., None], 3, axis=-1)
    a = lay[..., 3:] / 255.0
    return a * lay[..., :3] + (1 - a) * g


def top_stands_out(rgb: np.ndarray, amap: np.ndarray) -> float:
    """The mean colour distance (RGB, 0-441) between a pixel of the map's top 5 % and a pixel of
    the rest, in a rendering ``rgb`` (H, W, 3) of the map at its own resolution."""
    top = amap >= np.quantile(amap, 0.95)
    rest = rgb[~top][::3]
    return float(np.linalg.norm(rgb[top][:, None, :] - rest[None], axis=-1).mean())


STANDS_OUT = 120.0
"""The least mean colour distance between the top 5 % of a rendered map and the rest (issue 22: a
fixed 0-2 scale at 45 % opacity over maps peaking at 0.1-0.4 gave 36-55 on the book's cases)."""


def test_the_top_of_every_heat_map_stands_out_in_its_rendering(run, ds):
    """Issue 22, item 3, on the data URIs the case reader puts on the page: every heat map, drawn
    over its case as the browser draws it, shows its top 5 % in colours far from the rest's."""
    rows = widgets.pick_cases(ds, "test", 6)
    ex = widgets.case_explorer(run, ds, mode="static", cases=rows)
    seen = 0
    for k, i in enumerate(rows):
        html = visible_case(ex, k)
        r = ex.reading(k)
        for p in r.evidence_for + r.evidence_against:
            m = re.search(rf"<img class='iaiabl-layer iaiabl-heat[^>]*src='(data:image/png;base64,[^']+)' "
                          rf"data-layer='{p.index}'", html)
            (layer,) = _pngs(m.group(1))
            assert layer.size == ds.images[i].shape[::-1]
            d = top_stands_out(_composite(layer, ds.images[i]), p.activation)
            assert d >= STANDS_OUT, (i, p.index, d)
            legend = re.search(rf"<div class='iaiabl-layer-legend iaiabl-legend-\d+' data-layer='{p.index}'>(.*?)</div></div>",
                               html, re.S)
            assert legend and f"data-vmax='{float(p.activation.max()):.6g}'" in legend.group(1)
            seen += 1
    assert seen >= 6
    # the old rendering (a fixed 0-2 scale at 45 % opacity) of a weak map fails the same check
    yy, xx = np.mgrid[:64, :64]
    weak = 0.02 + 0.2 * np.exp(-((yy - 30) ** 2 + (xx - 30) ** 2) / 40.0)
    grey = np.full((64, 64), 128.0)
    import matplotlib
    old = 0.45 * np.asarray(matplotlib.colormaps["jet"](np.clip(weak / 2, 0, 1)))[..., :3] * 255 + 0.55 * grey[..., None]
    assert top_stands_out(old, weak) < STANDS_OUT
    (layer,) = _pngs(I.similarity_uri(weak))
    assert top_stands_out(_composite(layer, grey), weak) >= STANDS_OUT


def test_reading_frame_is_large_and_starts_without_overlay(run, ds):
    row = _test_cases(ds, 1)
    ex = widgets.case_explorer(run, ds, mode="static", cases=row)
    html = ex.current_html()
    frame = re.search(r"<div class='iaiabl-reader' data-px='(\d+)'[^>]*>(.*?)<div class='iaiabl-caption'>", html, re.S)
    assert int(frame.group(1)) == widgets.READING_PX >= 512
    assert f"--px:{widgets.READING_PX}px" in frame.group(2)
    radios = re.findall(r"<input type='radio'[^>]*>", frame.group(2))
    assert "checked" in radios[0] and not any("checked" in r for r in radios[1:])   # no heat map
    heats = re.findall(r"<img class='iaiabl-layer iaiabl-heat[^>]*>", frame.group(2))
    assert len(heats) == len(radios) - 1 >= 1
    for tag in heats:
        assert f"data-cmap='{plots.SIMILARITY_CMAP}'" in tag
    assert "class='iaiabl-zoom'" in frame.group(2) and "click to enlarge" in frame.group(2)
    assert all(im.mode in ("L", "RGB", "RGBA") for im in _pngs(html))


# ---------------------------------------------------------------------------------------------
# the case reader: reading, evidence, what if
# ---------------------------------------------------------------------------------------------


def test_case_reader_live_follows_the_dropdown(run, ds):
    rows = _test_cases(ds, 2)
    ex = widgets.case_explorer(run, ds, mode="live", cases=rows)
    dd = ex.controls["case"]
    assert isinstance(dd, W.Dropdown) and len(dd.options) == 2
    first = ex.current_html()
    assert f"data-row='{rows[0]}'" in first
    dd.value = 1                                    # the reader picks the second case
    second = ex.current_html()
    assert f"data-row='{rows[1]}'" in second and f"data-row='{rows[0]}'" not in second
    expl = explain.explain_case(run, rows[1], data=ds)
    assert _pcts(second, "iaiabl-margin-") == [T.pct(p) for p in expl.margin_prob]
    assert "the model's estimated probability that this margin is spiculated" in second
    assert _pcts(second, "iaiabl-malignancy") == [T.pct(expl.malignancy_prob)]
    assert "iaiabl-legend" in second
    for banned in ("τ", "h1", "logit", "softmax", "d²", "Eq.", "tensor(", "array("):
        assert banned not in _text(second), banned


def test_evidence_for_and_against_is_worded_by_its_sign(run, ds):
    rows = widgets.pick_cases(ds, "test", 6)
    seen = set()
    for i in rows:
        r = widgets.read_case(run, ds, i, top=3)
        html = widgets.case_explorer(run, ds, mode="static", cases=[i]).current_html()
        c = r.expl.predicted_class
        contrib = r.expl.contributions[c]
        assert [p.index for p in r.evidence_for] == [int(j) for j in np.argsort(-contrib, kind="stable")
                                                     if contrib[j] >= 0.005][:3]
        for sign, group in (("for", r.evidence_for), ("against", r.evidence_against)):
            for p in group:
                row = re.search(rf"<div class='iaiabl-row iaiabl-evidence' data-prototype='{p.index}' "
                                rf"data-sign='{sign}'.*?<b>([^<]*points[^<]*)</b>", html, re.S)
                assert row, (sign, p.index)
                words = T.points_sentence(contrib[p.index], MARGINS[c])
                assert row.group(1) == words
                assert (contrib[p.index] > 0) == (sign == "for") == words.startswith("adds")
                seen.add(sign)
        assert f"Evidence for {MARGINS[c]}" in html
    assert "for" in seen


def test_what_if_static_precomputes_every_single_and_pair(run, ds):
    rows = _test_cases(ds, 2)
    ex = widgets.case_explorer(run, ds, mode="static", cases=rows)
    health = {h.index: h for h in explain.prototype_health(run, ds)}
    assert len(ex.whatif) == 2 and len(ex.view.children) == 2
    for k, wi in enumerate(ex.whatif):
        r = ex.reading(k)
        offered = wi.offered
        assert offered == r.offered == [p.index for p in r.evidence_for + r.evidence_against]
        assert wi.html in visible_case(ex, k)
        names = ["nothing"] + [f"{'⚠ ' if health[j].flagged else ''}prototype {j} ({MARGINS[int(r.expl.prototype_class[j])]})"
                               for j in offered]
        for row in ("first", "second"):                  # two rows of buttons, "nothing" pressed
            labels = re.findall(rf"<label for='([^']+)' class='iaiabl-{row}-(\d+)' tabindex='0' role='button' "
                                rf"aria-pressed='(true|false)'(?: aria-label='[^']*')? data-prototype='(\d*)' "
                                rf"data-flagged='[01]'>([^<]*)</label>", wi.html)
            assert [lab[4] for lab in labels] == names
            assert [lab[2] for lab in labels] == ["true"] + ["false"] * len(offered)
            assert [lab[3] for lab in labels] == [""] + [str(j) for j in offered]
            for rid, pos, *_ in labels:                  # each label is tied to its hidden radio
                assert re.search(rf"<input type='radio' name='[^']+-{row}' id='{rid}' class='iaiabl-{row}-{pos}'", wi.html)
        assert len(wi.views) == 1 + len(offered) + len(offered) * (len(offered) - 1) // 2
        # the view the style sheet shows for each pair of pressed buttons is the set's
        choice = [None] + offered
        blocks = dict(re.findall(r"<div class='iaiabl-wi iaiabl-wi-(\d+-\d+)'>(.*?</table></div>)</div>", wi.html, re.S))
        rules = re.findall(r"input\.iaiabl-first-(\d+):checked~input\.iaiabl-second-(\d+):checked~"
                           r"\.iaiabl-wi-views>\.iaiabl-wi-(\d+-\d+)\{display:block\}", widgets.style_sheet())
        shown = {(int(a), int(b)): v for a, b, v in rules}
        for a in range(len(choice)):
            for b in range(len(choice)):
                dismissed = sorted({j for j in (choice[a], choice[b]) if j is not None})
                html = blocks[shown[a, b]]
                assert html == wi.views[frozenset(dismissed)]
                assert re.search(r"data-dismissed='([^']*)'", html).group(1) == ",".join(map(str, dismissed))
                before, after = _before_after(html)
                assert after == _shown(run, r.expl.similarity, dismissed)
                assert before == _shown(run, r.expl.similarity, [])
        # a prototype not listed whose dismissal alone changes the reading is named under the buttons
        for j in r.elsewhere:
            assert j not in offered
            assert _shown(run, r.expl.similarity, [j]) != _shown(run, r.expl.similarity, []) or \
                r.singles[j].call_changes
        if r.elsewhere:
            names = re.search(r"<div class='iaiabl-elsewhere' data-prototypes='([^']*)'>", wi.html).group(1)
            assert names == ",".join(map(str, r.elsewhere))
    assert re.search(r"\d+ views in all, about \d+ kB of this page", ex.mode_line.value)
    with pytest.raises(ValueError, match="top=4"):
        widgets.case_explorer(run, ds, mode="static", cases=rows, top=widgets.MAX_DISMISS // 2 + 1)


def _buttons_and_rows(html: str) -> tuple[dict, dict]:
    """{prototype: (flagged, text)} of the first row of dismiss buttons, and {prototype: flagged} of
    the evidence rows, as the page shows them."""
    buttons = {int(j): (int(f), t) for j, f, t in re.findall(
        r"<label for='[^']+' class='iaiabl-first-\d+'[^>]*data-prototype='(\d+)' data-flagged='([01])'>([^<]*)</label>", html)}
    rows = {int(j): int(f) for j, f in re.findall(
        r"<div class='iaiabl-row iaiabl-evidence' data-prototype='(\d+)' data-sign='\w+' data-flagged='([01])'>", html)}
    return buttons, rows


def test_dismiss_buttons_are_the_evidence_rows_flagged_by_the_health_rule(run, ds, monkeypatch):
    """For every precomputed case: the dismiss buttons are exactly the prototypes of its evidence
    rows (no more, no fewer), and a button (and a row) is marked ⚠ exactly when
    explain.prototype_health flags its prototype. The flags are then changed (one rule's output,
    patched) to show that the marks follow it; live, the check boxes are the same prototypes."""
    from dataclasses import replace

    rows = widgets.pick_cases(ds, "test", widgets.MAX_CASES)
    health = {h.index: h for h in explain.prototype_health(run, ds)}

    def check(ex, health):
        seen = 0
        for k in range(len(rows)):
            buttons, evidence = _buttons_and_rows(visible_case(ex, k))
            assert evidence, f"case {rows[k]} lists no evidence"
            assert set(buttons) == set(evidence), (rows[k], sorted(buttons), sorted(evidence))
            for j, (flag, text) in buttons.items():
                assert flag == evidence[j] == int(health[j].flagged), (rows[k], j)
                assert text.startswith("⚠ ") == health[j].flagged
                seen += flag
        return seen

    ex = widgets.case_explorer(run, ds, mode="static", cases=rows)
    check(ex, health)
    # the marks follow the one rule: flag one prototype of the first case's evidence instead (a flag
    # set unlike the rule's own, so the page must change), and read the page again
    offered = sorted(_buttons_and_rows(visible_case(ex, 0))[1])
    flagged = {j for j, h in health.items() if h.flagged}
    p = next((j for j in offered if {j} != flagged), None)
    assert p is not None, (f"case {rows[0]}: its only evidence prototype is the only flagged one; "
                           "no other flag set to show")
    changed = [replace(h, flags=["its patch lies on the image border"] if h.index == p else [])
               for h in health.values()]
    monkeypatch.setattr(C, "health", lambda run_, ds_: changed)
    ex2 = widgets.case_explorer(run, ds, mode="static", cases=rows)
    assert check(ex2, {h.index: h for h in changed}) > 0
    assert "⚠ marks a prototype that failed its health check" in visible_case(ex2, 0) or \
        not any(h.flagged for h in changed if h.index in ex2.reading(0).offered)
    live = widgets.case_explorer(run, ds, mode="live", cases=rows[:2])
    for k in range(2):
        live.controls["case"].value = k
        r = live.reading(k)
        boxes = [t.description for t in live.controls["dismiss"].children]
        assert boxes == [f"dismiss {'⚠ ' if h.flagged else ''}prototype {j} ({MARGINS[int(r.expl.prototype_class[j])]})"
                         for j, h in ((j, {h.index: h for h in changed}[j]) for j in r.offered)]
        assert sorted(r.offered) == sorted(_buttons_and_rows(live.current_html())[1])


def _quality(html: str) -> dict:
    m = re.search(r"<div class='iaiabl-quality' data-n='(\d+)' data-agree='(\d+)' data-margin-auroc='([^']*)' "
                  r"data-malignancy-auroc='([^']*)'>(.*?)</div>", html)
    assert m, "no line on how good the model is"
    return {"n": int(m.group(1)), "agree": int(m.group(2)), "margin": m.group(3), "malignancy": m.group(4),
            "text": re.sub(r"<[^>]+>", "", m.group(5))}


def test_every_reading_says_how_good_the_model_is_from_its_evaluation(tiny_run, prepared, tmp_path):
    """Beside every reading: the test cases whose margin call is the recorded margin and the AUROCs
    that evaluate recorded for the run (metrics.json), never typed; the count agrees with the
    model's own calls on the test split (explain, case by case). Before the run is evaluated the
    line says there is no evaluation, and how to make one."""
    import shutil

    from iaiabl_lib import evaluate
    from iaiabl_lib.train import load_run

    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    for name in ("metrics.json", "metrics.md", "predictions.npz"):
        (copy / name).unlink(missing_ok=True)
    run = load_run(copy, device="cpu")
    ds = C.dataset(run, prepared)
    rows = _test_cases(ds, 2)
    none = widgets.case_explorer(run, ds, mode="static", cases=rows).current_html()
    assert "iaiabl-quality-none" in none and "iaiabl evaluate --run" in _text(none)
    metrics = evaluate.evaluate_run(copy, data_dir=prepared, device="cpu", n_boot=50)
    run = load_run(copy, device="cpu")
    ex = widgets.case_explorer(run, ds, mode="static", cases=rows)
    test = np.flatnonzero(ds.split == "test")
    agree = sum(explain.explain_case(run, int(i), data=ds).predicted_class == int(ds.labels[i]) for i in test)
    for k in range(len(rows)):
        q = _quality(visible_case(ex, k))
        assert q["n"] == metrics["n_test"] == len(test) and q["agree"] == agree
        assert float(q["margin"]) == metrics["margin_auroc"]["average"]["value"]
        assert float(q["malignancy"]) == metrics["malignancy_auroc"]["value"]
        assert f"agrees with the recorded margin on {agree} ({T.pct(agree / len(test))})" in q["text"]
        assert f"{metrics['margin_auroc']['average']['value']:.2f}" in q["text"]
        assert f"{metrics['margin_auroc']['average']['ci_low']:.2f} to" in q["text"]
    live = widgets.case_explorer(run, ds, mode="live", cases=rows)
    assert _quality(live.current_html())["agree"] == agree


def test_the_revealed_truth_says_when_the_model_disagrees(run, ds):
    """Behind the ground-truth click of every case: a plain sentence, and a warning mark, when the
    model's margin call is not the recorded margin; a sentence saying it agrees otherwise."""
    import html as H

    rows = widgets.pick_cases(ds, "test", widgets.MAX_CASES)
    ex = widgets.case_explorer(run, ds, mode="static", cases=rows)
    kinds = set()
    for k, i in enumerate(rows):
        body = re.search(r"<div class='iaiabl-truth-body'>(.*?)</div></details>", visible_case(ex, k), re.S).group(1)
        call, recorded = MARGINS[ex.reading(k).expl.predicted_class], MARGINS[int(ds.labels[i])]
        m = re.search(r"data-agrees='([01])'>(.*?)</div>", body)
        assert m and m.group(1) == str(int(call == recorded))
        said = H.unescape(m.group(2))
        if call == recorded:
            assert said == f"The model's call agrees with the record: {call}."
        else:
            assert said == f"⚠ The model reads this margin as {call}; the record says {recorded}."
        # whose record it is, beside it: on synthetic data the data generator's, not a radiologist's
        assert "the record is what the data generator drew, not a radiologist's reading" in H.unescape(body)
        kinds.add(call == recorded)
    assert False in kinds, "no precomputed case where the model disagrees with the record"


def test_cases_can_be_ordered_by_call_flagged_evidence_and_disagreement(run, ds):
    """The case list can be ordered by the model's call, by flagged evidence (the health rule's
    flags among the evidence rows, most first) and by disagreement with the record (first); each
    order is its own case list tied to a stack over the same views (static), or re-sorts the list
    and keeps the case shown (live)."""
    rows = widgets.pick_cases(ds, "test", widgets.MAX_CASES)
    ex = widgets.case_explorer(run, ds, mode="static", cases=rows)
    health = {h.index: h for h in explain.prototype_health(run, ds)}
    calls = [ex.reading(k).expl.predicted_class for k in range(len(rows))]
    flagged = [sum(health[j].flagged for j in ex.reading(k).offered) for k in range(len(rows))]
    agrees = [int(calls[k] == int(ds.labels[i])) for k, i in enumerate(rows)]
    assert [name for name, *_ in ex.orders] == list(widgets.case.ORDERS)
    keys = [list(range(len(rows))), calls, [-f for f in flagged], agrees]
    targets = {(l.source, l.target) for l in ex.links}
    assert ((ex.controls["order"], "index"), (ex.by_order, "selected_index")) in targets
    for o, (name, perm, labels) in enumerate(ex.orders):
        assert sorted(perm) == list(range(len(rows)))
        assert [(keys[o][k], k) for k in perm] == sorted((keys[o][k], k) for k in perm), name
        box = ex.by_order.children[o]
        picker, views = box.children[0].children[1], box.children[1]
        assert [lab for lab, _ in picker.options] == labels
        assert all(v is ex.views[k] for v, k in zip(views.children, perm))      # the same views, reordered
        assert ((picker, "index"), (views, "selected_index")) in targets
        for lab, k in zip(labels, perm):
            assert lab.startswith(C.case_number(ds, rows[k]).capitalize())
            if o == 1:
                assert lab.endswith(f"read as {MARGINS[calls[k]]}")
            if o == 2:
                assert (f"⚠ {flagged[k]} flagged" in lab) == bool(flagged[k])
            if o == 3:
                assert lab.endswith(("agrees with" if agrees[k] else "disagrees with") + " the record")
    live = widgets.case_explorer(run, ds, mode="live", cases=rows)
    live.controls["case"].value = 2
    assert f"data-row='{rows[2]}'" in live.current_html()
    live.controls["order"].index = 1
    assert [k for _, k in live.controls["case"].options] == ex.orders[1][1]
    assert live.controls["case"].value == 2 and f"data-row='{rows[2]}'" in live.current_html()
    live.controls["case"].index = 0                       # the first case in the model's-call order
    assert f"data-row='{rows[ex.orders[1][1][0]]}'" in live.current_html()


def visible_case(ex, k: int) -> str:
    ex.view.selected_index = k
    return ex.current_html()


def test_what_if_live_dismisses_any_set(run, ds):
    rows = _test_cases(ds, 2)
    ex = widgets.case_explorer(run, ds, mode="live", cases=rows)
    r = ex.reading(0)
    toggles = list(ex.controls["dismiss"].children)
    assert len(toggles) == len(r.offered) and all(isinstance(t, W.Checkbox) for t in toggles)
    before = ex.current_html()
    assert _before_after(before)[1] == _shown(run, r.expl.similarity, [])
    chosen = []
    for t, j in zip(toggles, r.offered):
        t.value = True                              # the reader dismisses prototype j as well
        chosen.append(j)
        html = ex.current_html()
        assert _before_after(html)[1] == _shown(run, r.expl.similarity, chosen)
        assert re.search(r"data-dismissed='([^']*)'", html).group(1) == ",".join(map(str, chosen))
    for t in toggles:
        t.value = False
    assert ex.current_html() == before
    ex.controls["case"].value = 1                   # another case: its own prototypes to dismiss
    r1 = ex.reading(1)
    assert len(ex.controls["dismiss"].children) == len(r1.offered)


def test_dismissed_probabilities_is_the_model_heads(run, ds):
    expl = explain.explain_case(run, _test_cases(ds, 1)[0], data=ds, top=3)
    keep = np.ones(len(expl.similarity), np.float32)
    keep[[p.index for p in expl.prototypes[:2]]] = 0
    got = widgets.dismissed_probabilities(run, expl.similarity, keep)
    prob, mal = _heads(run, expl.similarity, keep)
    np.testing.assert_allclose(got["margin_prob"], prob, rtol=1e-6)
    assert got["malignancy_prob"] == pytest.approx(mal)
    c = expl.predicted_class
    own = [j for j in range(len(keep)) if expl.contributions[c, j] > 0]
    k = np.ones_like(keep)
    k[own] = 0
    assert explain.dismissed_probabilities(run, expl.similarity, k)["margin_prob"][c] < expl.margin_prob[c]


def test_dismiss_reasoning_is_the_reader_on_one_case(run, ds):
    case = _test_cases(ds, 1)[0]
    ex = widgets.dismiss_reasoning(run, ds, case, mode="static")
    assert ex.rows == [case] and len(ex.whatif) == 1
    assert ex.children[0].value.count("Dismiss part of the reasoning") == 1


# ---------------------------------------------------------------------------------------------
# where the model looks (activation precision)
# ---------------------------------------------------------------------------------------------


def _ap(html: str) -> tuple[float, float]:
    m = re.search(r"data-top='([0-9.]+)' data-precision='([0-9.]+)'", html)
    return float(m.group(1)), float(m.group(2))


def _widgets_in(w) -> list:
    """``w`` and every widget under it."""
    out = [w]
    for c in getattr(w, "children", ()):
        out += _widgets_in(c)
    return out


def test_parse_percent_takes_decimals_and_refuses_the_rest():
    """Issue 22, item 6: a typed "2.5" is 2.5, never 25 (ipywidgets' IntText drops the point) and
    never 2 (the slider's own readout truncates); anything else is refused with a message naming it."""
    from iaiabl_lib.widgets.precision import parse_percent

    for typed, value in (("2.5", 2.5), ("2,5", 2.5), (" 10 ", 10.0), ("7%", 7.0), ("50", 50.0), ("1", 1.0),
                         ("12.75 %", 12.75)):
        assert parse_percent(typed, 50) == (value, ""), typed
    for typed in ("", "abc", "0.5", "0", "50.5", "70", "-3", "2.5.1", "1e1", "2 5"):
        value, why = parse_percent(typed, 50)
        assert value is None and why, typed
        assert "from 1 to 50" in why or "outside 1 to 50" in why, why
        if typed.strip():
            assert typed.strip() in why, why          # the message names what was typed


def test_no_number_box_reads_a_decimal_as_something_else(run, ds):
    """No explorer, static or live, holds an integer text box (its browser view drops a typed
    decimal point: "2.5" becomes 25) or a slider with an editable readout (it truncates "2.5" to 2)."""
    rows = widgets.pick_cases(ds, "test", 1, prefer_fine=True)
    for mode in ("static", "live"):
        built = [widgets.activation_precision_explorer(run, ds, mode=mode, cases=rows, max_percent=6),
                 widgets.case_explorer(run, ds, mode=mode, cases=rows),
                 widgets.prototype_gallery(run, ds, n_nearest=1, mode=mode, prototypes=[0]),
                 widgets.fine_annotation_comparison(run, run, ds, mode=mode, cases=rows)]
        for ex in built:
            for w in _widgets_in(ex):
                assert not isinstance(w, (W.IntText, W.BoundedIntText)), (mode, ex, w)
                if isinstance(w, (W.IntSlider, W.FloatSlider)):
                    assert not w.readout, (mode, w)
    with pytest.raises(ValueError, match="percent=2.5"):
        widgets.activation_precision_explorer(run, ds, mode="static", cases=rows, percent=2.5)


def test_precision_live_takes_a_typed_decimal_and_refuses_the_rest(run, ds):
    rows = widgets.pick_cases(ds, "test", 2, prefer_fine=True)
    ex = widgets.activation_precision_explorer(run, ds, mode="live", cases=rows)
    assert isinstance(ex.slider, W.IntSlider) and isinstance(ex.number, W.Text)
    assert ex.number.value == str(ex.slider.value) == str(widgets.DEFAULT_PERCENT)
    assert _ap(ex.current_html())[0] == widgets.DEFAULT_PERCENT
    expl = explain.explain_case(run, rows[0], data=ds, top=run.model.num_prototypes)
    lead = explain.leading_prototype(expl)
    mask, _ = widgets.relevant(ds, rows[0])
    for typed, value in (("10", 10), ("2.5", 2.5), ("37", 37), ("12,5", 12.5), ("1", 1)):
        ex.number.value = typed                     # the reader types a percentage and presses Enter
        html = ex.current_html()
        assert ex.message.value == ""
        top, shown = _ap(html)
        assert top == value, (typed, top)
        assert f"most active <b>{value:g} %</b>" in html and f">{value:g} % of the map<" in ex.readout.value
        assert ex.slider.value == round(value)
        assert shown == pytest.approx(metrics.activation_precision(lead.activation, mask, 1 - value / 100), abs=1e-4)
        n, inside = re.search(r"(\d+) pixels, of which (\d+) \(", html).groups()
        sel = widgets.top_pixels(lead.activation, value)
        assert int(n) == sel.sum() and int(inside) / int(n) == pytest.approx(shown, abs=1e-4)
        assert f"(<b>{T.pct(int(inside) / int(n))}</b>)" in html      # one number, one rounding
        assert "τ" not in html
    before = ex.current_html()
    for typed in ("abc", "70", "0.5", ""):
        ex.number.value = typed
        assert ex.current_html() == before, typed          # refused: the view is unchanged ...
        assert "iaiabl-input-message" in ex.message.value and "role='alert'" in ex.message.value
        assert (typed or "empty") in ex.message.value       # ... and the message says what was typed
    ex.slider.value = 25                                    # the slider: the box follows, the message goes
    assert ex.number.value == "25" and _ap(ex.current_html())[0] == 25 and ex.message.value == ""
    ex.controls["case"].value = 1
    html = ex.current_html()
    assert f"data-row='{rows[1]}'" in html and _ap(html)[0] == 25


def test_precision_static_has_a_view_for_every_percentage(run, ds):
    rows = widgets.pick_cases(ds, "test", 2, prefer_fine=True)
    ex = widgets.activation_precision_explorer(run, ds, mode="static", cases=rows, max_percent=12)
    outer = ex.view
    assert ex.number is None                                # nothing to type: nothing misread
    assert len(outer.children) == 2 and all(len(s.children) == 13 for s in outer.children)
    assert ex.slider.max == 12 and not ex.slider.readout
    for s in outer.children:
        assert s.selected_index == widgets.DEFAULT_PERCENT
        for pc in range(1, 13):
            assert _ap(s.children[pc].value)[0] == pc          # stack index = the percentage
    # the value written beside the slider: one small view per percentage, switched by the slider
    assert ex.readout.selected_index == widgets.DEFAULT_PERCENT
    for pc in range(1, 13):
        assert f">{pc} % of the map<" in ex.readout.children[pc].value
    pairs = {(l.source, l.target) for l in ex.links}
    assert ((ex.controls["case"], "index"), (outer, "selected_index")) in pairs
    assert ((ex.slider, "value"), (ex.readout, "selected_index")) in pairs
    for s in outer.children:
        assert ((ex.slider, "value"), (s, "selected_index")) in pairs
    assert "2.5" in ex.children[2].value                   # the intro says where decimals are taken


# ---------------------------------------------------------------------------------------------
# prototype gallery, fine-annotation comparison
# ---------------------------------------------------------------------------------------------


def test_gallery_lists_flagged_prototypes_first_with_a_sentence(run, ds):
    health = explain.prototype_health(run, ds)
    ex = widgets.prototype_gallery(run, ds, n_nearest=2, mode="static")
    flagged = [h.index for h in health if h.flagged]
    assert ex.order[:len(flagged)] == [h.index for h in sorted((h for h in health if h.flagged),
                                                                key=lambda h: (h.margin_ap, h.index))]
    assert sorted(ex.order) == list(range(run.model.num_prototypes))
    labels = [lab for lab, _ in ex.controls["prototype"].options]
    assert [lab.startswith("⚠") for lab in labels] == [j in flagged for j in ex.order]
    table = ex.children[2].value
    assert re.findall(r"<tr class='iaiabl-health' data-prototype='(\d+)'", table) == [str(j) for j in ex.order]
    for h in health:
        sentence = widgets.distrust_sentence(h)
        assert bool(sentence) == h.flagged
        if h.flagged:
            assert sentence.startswith("Distrust it: ") and sentence.count(".") == 1
    assert f"less than {T.pct(explain.OFF_LESION_THRESHOLD)}" in table
    first = ex.views[0].value
    assert f"data-prototype='{ex.order[0]}'" in first
    w = run.model.margin_head.weight[:, ex.order[0]].detach().numpy()
    assert all(f"{v:+.2f}" in first for v in w if abs(v) >= 0.005)
    assert "d²" not in _text(first) and "h1" not in _text(first)


def test_gallery_live_follows_the_dropdown(run, ds):
    live = widgets.prototype_gallery(run, ds, n_nearest=1, mode="live", prototypes=[0, 1])
    live.controls["prototype"].value = 1
    assert f"data-prototype='{live.order[1]}'" in live.current_html()


def test_fine_annotation_comparison_live_and_static(run, ds):
    # the same run twice is enough to test the widget (the models' difference is chapter 7's topic)
    rows = widgets.pick_cases(ds, "test", 2, prefer_fine=True)
    live = widgets.fine_annotation_comparison(run, run, ds, mode="live", cases=rows)
    first = live.current_html()
    assert "With the fine-annotation loss" in first and "Without the fine-annotation loss" in first
    expl = explain.explain_case(run, rows[0], data=ds, top=run.model.num_prototypes)
    lead = explain.leading_prototype(expl)
    mask, _ = widgets.relevant(ds, rows[0])
    ap = metrics.activation_precision(lead.activation, mask, 1 - widgets.DEFAULT_PERCENT / 100)
    assert re.findall(r"data-precision='([0-9.]+)'", first) == [f"{ap:.4f}"] * 2
    live.controls["case"].value = 1
    assert f"data-row='{rows[1]}'" in live.current_html()
    static = widgets.fine_annotation_comparison(run, run, ds, mode="static", cases=rows)
    assert len(static.views) == 2 and len(static.links) == 1


def test_leading_prototype_is_the_predicted_class_pam(run, ds):
    """The explorers' map is the one evaluate.predicted_class_pam computes for a split."""
    from iaiabl_lib.evaluate import predicted_class_pam

    i = _test_cases(ds, 1)[0]
    expl = explain.explain_case(run, i, data=ds, top=run.model.num_prototypes)
    _, x = explain.prepare_image(ds.images[i], ds.images.shape[-1])
    with torch.no_grad():
        out = run.model(x)
    pam = predicted_class_pam(out.similarity.numpy(), out.similarity_maps.numpy(), run.model.prototype_class,
                              [expl.predicted_class], ds.images.shape[-1])[0]
    np.testing.assert_allclose(explain.leading_prototype(expl).activation, pam, rtol=1e-5, atol=1e-6)


def test_pick_cases_takes_the_margins_in_turn(ds):
    rows = widgets.pick_cases(ds, "test", 6)
    assert len(rows) == len(set(rows)) == min(6, int((ds.split == "test").sum()))
    assert all(ds.split[i] == "test" for i in rows)
    assert {int(ds.labels[i]) for i in rows[:3]} == {0, 1, 2}
    fine = widgets.pick_cases(ds, "test", 8, prefer_fine=True)
    assert ds.has_fine[ds.split == "test"].any(), "the fixture's test split has fine annotations"
    assert all(ds.has_fine[i] for i in fine)


def test_large_images_are_encoded_no_wider_than_shown():
    """A 224-px map (the paper preset) is encoded at HEAT_PX (it is a smooth enlargement of a 14 × 14
    grid); repeated underlays and thumbnails at most as wide as asked; the reading view keeps its pixels."""
    yy, xx = np.mgrid[:224, :224]
    amap = 2.5 * np.exp(-((yy - 120) ** 2 + (xx - 100) ** 2) / 800.0)
    scale = plots.fit_heat_scale(amap)
    (heat,) = _pngs(I.similarity_uri(amap, scale))
    assert heat.size == (I.HEAT_PX, I.HEAT_PX) and heat.mode == "RGBA"
    on_scale = plots.similarity_rgb(np.linspace(scale.start, scale.high, 2001), scale)
    px = np.asarray(heat)
    coloured = px[px[..., 3] == 255][:, :3]
    far = np.abs(coloured.reshape(-1, 1, 3).astype(int) - on_scale[None].astype(int)).sum(-1).min(1)
    assert len(coloured) and far.max() <= 3                # every coloured pixel a colour of the scale
    grey = (np.arange(224 * 224) % 251).reshape(224, 224).astype(np.uint8)
    assert _pngs(I.grey_uri(grey, 128))[0].size == (128, 128)
    assert _pngs(I.grey_uri(grey))[0].size == (224, 224)
    assert _pngs(I.thumbnail(grey, None, "a case", px=192))[0].size == (192, 192)
    frame = I.reading_frame(grey, [])
    assert _pngs(frame)[0].size == (224, 224)


def test_the_sphinx_extension_imports_light():
    """Sphinx imports iaiabl_lib.widgets for its extension: torch and matplotlib wait until an
    explorer is built."""
    import subprocess
    import sys

    code = ("import sys, iaiabl_lib.widgets as w; assert callable(w.setup); "
            "print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


# ---------------------------------------------------------------------------------------------
# clinical context (issue 22, items 4 and 8): the whole mammogram, the matched part boxed, the
# other view of a lesion, one chosen case shared by the explorers
# ---------------------------------------------------------------------------------------------


def _pair_and_one(ds) -> list[int]:
    """A test case whose other view is a test case too, that view, and a case of another lesion."""
    tests = [int(i) for i in np.flatnonzero(ds.split == "test")]
    a = next(i for i in tests if X.other_views(ds, i))
    b = X.other_views(ds, a)[0]
    c = next(i for i in tests if i not in (a, b) and b not in X.other_views(ds, i)
             and a not in X.other_views(ds, i))
    return [a, b, c]


def test_the_case_view_shows_the_whole_mammogram_beside_the_region(run, ds):
    rows = _pair_and_one(ds)
    ex = widgets.case_explorer(run, ds, mode="static", cases=rows)
    html = ex.current_html()
    image = re.search(r"<div class='iaiabl-read-image'>(.*?)<div class='iaiabl-read-side'>", html, re.S).group(1)
    roi = image.index("class='iaiabl-reader'")
    whole = re.search(r"<figure class='iaiabl-whole'><img src='data:image/png;base64,([^']+)' alt='([^']+)'>", image)
    assert whole and whole.start() > roi, "no whole mammogram beside the region of interest"
    alt = html_mod.unescape(whole.group(2))
    assert alt.startswith(C.case_number(ds, rows[0]).capitalize() + ", ")
    assert "boxed in yellow" in alt and re.search(r"scale bar is \d+ mm, from the DICOM PixelSpacing", alt)
    from PIL import Image

    png = Image.open(io.BytesIO(base64.b64decode(whole.group(1))))
    assert png.size[1] == X.WHOLE_PX                 # a small picture, not the mammogram
    assert ex.reading(0).whole.crop_box == tuple(int(v) for v in ds.manifest[rows[0]]["crop_box"].split())


def test_each_heat_map_boxes_the_part_of_the_case_it_matches(run, ds):
    rows = _test_cases(ds, 1)
    ex = widgets.case_explorer(run, ds, mode="static", cases=rows)
    html = ex.current_html()
    reading = ex.reading(0)
    side = reading.expl.image.shape[-1]
    listed = reading.evidence_for + reading.evidence_against
    boxes = re.findall(r"<span class='iaiabl-box iaiabl-match iaiabl-layer-(\d+)' data-layer='(\d+)' "
                       r"style='left:([\d.]+)%;top:([\d.]+)%;width:([\d.]+)%;height:([\d.]+)%'>", html)
    assert len(boxes) == len(listed) >= 1
    for (k, key, left, top, width, height), p in zip(boxes, listed):
        y0, x0, y1, x1 = p.case_box
        assert int(key) == p.index and int(k) == listed.index(p) + 1
        assert [float(v) for v in (left, top, width, height)] == pytest.approx(
            [100 * x0 / side, 100 * y0 / side, 100 * (x1 - x0) / side, 100 * (y1 - y0) / side], abs=0.01)
    css = widgets.style_sheet()
    assert ".iaiabl-frame>.iaiabl-match{display:none" in css                       # hidden ...
    assert "input.iaiabl-pick-1:checked~.iaiabl-frame>.iaiabl-layer-1{display:block}" in css   # ... shown with its map
    alts = re.findall(r"<img class='iaiabl-layer iaiabl-heat[^>]* alt='([^']+)'", html)
    assert alts and all("a yellow box marks the part that matches most closely" in a for a in alts)


def test_the_other_view_of_a_lesion_is_a_button_when_listed(run, ds):
    a, b, c = _pair_and_one(ds)
    ex = widgets.case_explorer(run, ds, mode="static", cases=[a, b, c])
    first = widgets.visible_html(ex.views[0])
    button = re.search(r"<button type='button' class='iaiabl-choose-case' data-case='([^']+)' onclick=\"([^\"]+)\">([^<]+)</button>", first)
    assert button, "no button to the other view"
    assert button.group(1) == C.case_number(ds, b).capitalize()
    assert ds.manifest[b]["view"] in button.group(3)
    assert html_mod.unescape(button.group(2)) == A.CHOOSE_CASE_JS
    third = widgets.visible_html(ex.views[2])
    assert "iaiabl-choose-case" not in third
    # a lesion whose other view is not listed: named, with where it is, no button
    alone = widgets.case_explorer(run, ds, mode="static", cases=[a])
    text = alone.current_html()
    assert "iaiabl-choose-case" not in text
    assert f"is {C.case_number(ds, b)}, not among the cases of this explorer" in text


def test_share_case_gives_the_explorers_one_chosen_case(run, ds):
    rows = _pair_and_one(ds)
    reader = widgets.case_explorer(run, ds, mode="static", cases=rows)
    precision = widgets.activation_precision_explorer(run, ds, mode="static", cases=rows, max_cases=3, percent=2, max_percent=3)
    compare = widgets.fine_annotation_comparison(run, run, ds, mode="static", cases=rows)
    links = widgets.share_case(reader, precision, compare)
    from ipywidgets.widgets.widget_link import Link

    assert len(links) == 2 and all(isinstance(ln, Link) for ln in links)        # in the browser: jslink
    chained = [(ln.source[0], ln.source[1], ln.target[0], ln.target[1]) for ln in links]
    assert chained == [(reader.controls["case"], "index", precision.controls["case"], "index"),
                       (precision.controls["case"], "index", compare.controls["case"], "index")]
    assert all(ln in ex.links for ex in (reader, precision, compare) for ln in links)
    assert all("chosen in the other 2 explorers of this page" in ex.mode_line.value for ex in (reader, precision, compare))
    # the browser's handler for the reader's ordered lists (access.SHOWN_JS) is enabled by one group
    groups = {re.search(r"class='iaiabl-shared' data-group='(\w+)'", ex.mode_line.value).group(1)
              for ex in (reader, precision, compare)}
    assert len(groups) == 1 and all("iaiabl-case-picker" in ex.controls["case"]._dom_classes
                                    for ex in (reader, precision, compare))
    assert "class='iaiabl-shown' data-case='" in reader.current_html()
    # sharing the same explorers again links nothing more and says it once
    line_before, links_before = reader.mode_line.value, list(reader.links)
    assert widgets.share_case(reader, precision, compare) == links
    assert reader.mode_line.value == line_before and reader.links == links_before
    assert reader.mode_line.value.count("iaiabl-shared") == 1
    with pytest.raises(InputError, match="different cases"):
        widgets.share_case(reader, widgets.fine_annotation_comparison(run, run, ds, mode="static", cases=rows[:2]))
    # live: the kernel links the values (the case's position), whatever order a list shows
    live_a = widgets.case_explorer(run, ds, mode="live", cases=rows)
    live_b = widgets.fine_annotation_comparison(run, run, ds, mode="live", cases=rows)
    widgets.share_case(live_a, live_b)
    assert "data-group" not in live_a.mode_line.value                   # the kernel shares the case
    live_a.controls["order"].index = 1                              # reorder the reader's list
    live_a.controls["case"].value = 2
    assert f"data-row='{rows[2]}'" in live_b.current_html()
    live_b.controls["case"].value = 1
    assert f"data-row='{rows[1]}'" in live_a.current_html()

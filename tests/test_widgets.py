"""iaiabl_lib.widgets: the explorers react to their controls (live mode, kernel callbacks) and
precompute the right views, tied to their controls by browser-side links (static mode).

Live mode is driven the way a reader drives it: a control's value is set and the displayed HTML is
read back. Numbers shown are compared with what the library computes (explain, metrics, the
model's heads). The browser side of static mode is tested on the built book in
test_widgets_browser.py.
"""
from __future__ import annotations

import base64
import re
import types

import numpy as np
import pytest
import torch

import ipywidgets as W

from iaiabl_lib import explain, metrics, widgets
from iaiabl_lib.config import MARGINS


@pytest.fixture(scope="module")
def run(tiny_run):
    from iaiabl_lib.train import load_run

    return load_run(tiny_run, device="cpu")


@pytest.fixture(scope="module")
def ds(run, prepared):
    return widgets._dataset(run, prepared)


def _pcts(html: str, cls: str) -> list[str]:
    """The bold percentages shown in the probability lines of class ``cls``, in order."""
    return re.findall(rf"<div class='iaiabl-prob {cls}[\w-]*'>.*?<b>([^<]+%)</b>", html)


def _before_after(html: str) -> tuple[list[str], list[str]]:
    """The dismissal table: probabilities as read, and after the dismissal (margins, then malignancy)."""
    return (re.findall(r"<span class='iaiabl-before'>([^<]+)</span>", html),
            re.findall(r"<b class='iaiabl-after'>([^<]+)</b>", html))


def _shown(p: float) -> str:
    return widgets._pct(p)


def _png_sizes(html: str) -> list[int]:
    return [len(base64.b64decode(b)) for b in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)]


def _test_cases(ds, n=2):
    rows = widgets.pick_cases(ds, "test", n)
    assert len(rows) == n
    return rows


# ---------------------------------------------------------------------------------------------
# mode
# ---------------------------------------------------------------------------------------------


def test_resolve_mode_rule(monkeypatch):
    monkeypatch.delenv(widgets.STATIC_ENV, raising=False)
    assert widgets.resolve_mode("live") == "live"
    assert widgets.resolve_mode("static") == "static"
    assert widgets.resolve_mode("auto") == "static"          # no kernel here: nothing to call back
    monkeypatch.setattr(widgets, "_in_kernel", lambda: True)
    assert widgets.resolve_mode("auto") == "live"            # a notebook with a kernel
    for value, mode in (("1", "static"), ("true", "static"), ("static", "static"), ("0", "live"), ("no", "live")):
        monkeypatch.setenv(widgets.STATIC_ENV, value)
        assert widgets.resolve_mode("auto") == mode, value
    with pytest.raises(ValueError, match="mode"):
        widgets.resolve_mode("kernel")


def test_sphinx_extension_sets_static_for_the_book_build(monkeypatch):
    monkeypatch.delenv(widgets.STATIC_ENV, raising=False)
    calls = {}
    app = types.SimpleNamespace(add_config_value=lambda name, default, rebuild: calls.setdefault(name, default),
                                connect=lambda event, fn: calls.setdefault(event, fn))
    meta = widgets.setup(app)
    assert meta["parallel_read_safe"]
    assert calls["iaiabl_widgets_mode"] == "static"
    calls["config-inited"](app, types.SimpleNamespace(iaiabl_widgets_mode="static"))
    assert widgets.resolve_mode("auto") == "static"
    with pytest.raises(ValueError):
        calls["config-inited"](app, types.SimpleNamespace(iaiabl_widgets_mode="sometimes"))


def test_mode_line_says_which_mode(run, ds):
    row = _test_cases(ds, 1)
    for mode, line in (("live", widgets.LIVE_LINE), ("static", widgets.STATIC_LINE)):
        ex = widgets.case_explorer(run, ds, mode=mode, cases=row)
        assert ex.mode == mode
        assert line in ex.mode_line.value
        assert ex.mode_line in ex.children


# ---------------------------------------------------------------------------------------------
# case explorer
# ---------------------------------------------------------------------------------------------


def test_case_explorer_live_follows_the_dropdown(run, ds):
    rows = _test_cases(ds, 2)
    ex = widgets.case_explorer(run, ds, mode="live", cases=rows)
    dd = ex.controls["case"]
    assert isinstance(dd, W.Dropdown) and len(dd.options) == 2
    first = ex.current_html()
    assert f"data-case='{ds.ids[rows[0]]}'" in first
    dd.value = 1                                    # the reader picks the second case
    second = ex.current_html()
    assert second != first
    assert f"data-case='{ds.ids[rows[1]]}'" in second
    # the probabilities shown are the model's, in words
    expl = explain.explain_case(run, rows[1], data=ds)
    assert _pcts(second, "iaiabl-margin-") == [_shown(p) for p in expl.margin_prob]
    assert "the model's estimated probability that this margin is spiculated" in second
    assert _pcts(second, "iaiabl-malignancy") == [_shown(expl.malignancy_prob)]
    assert "points" in second and "prototype" in second
    assert "linear-gradient" in second, "no colour legend for the activation maps"
    assert "tensor(" not in second and "array(" not in second
    assert all(n <= widgets.MAX_PNG_BYTES for n in _png_sizes(second))


def test_case_explorer_static_precomputes_every_case(run, ds):
    rows = _test_cases(ds, 3)
    ex = widgets.case_explorer(run, ds, mode="static", cases=rows)
    dd = ex.controls["case"]
    assert isinstance(ex.view, W.Stack) and len(ex.view.children) == 3 == len(ex.views)
    for k, (view, i) in enumerate(zip(ex.views, rows)):
        assert f"data-case='{ds.ids[i]}'" in view.value
        assert all(n <= widgets.MAX_PNG_BYTES for n in _png_sizes(view.value))
    (link,) = ex.links
    assert isinstance(link, W.widgets.widget_link.Link)
    assert link.source == (dd, "index") and link.target == (ex.view, "selected_index")
    # what the browser does when the reader picks a case: the stack shows that case's view
    ex.view.selected_index = 2
    assert f"data-case='{ds.ids[rows[2]]}'" in ex.current_html()
    assert "3 test cases precomputed" in ex.mode_line.value


def test_pick_cases_takes_the_margins_in_turn(ds):
    rows = widgets.pick_cases(ds, "test", 6)
    assert len(rows) == len(set(rows)) == min(6, int((ds.split == "test").sum()))
    assert all(ds.split[i] == "test" for i in rows)
    assert {int(ds.labels[i]) for i in rows[:3]} == {0, 1, 2}
    fine = widgets.pick_cases(ds, "test", 8, prefer_fine=True)
    if ds.has_fine[ds.split == "test"].any():
        assert all(ds.has_fine[i] for i in fine)


# ---------------------------------------------------------------------------------------------
# dismissing prototypes (Fig. 1e)
# ---------------------------------------------------------------------------------------------


def _heads(run, similarity, keep):
    """What the model's heads compute, written out here: h1 then h2 on s ⊙ keep."""
    m = run.model
    with torch.no_grad():
        s = torch.as_tensor(similarity * keep, dtype=torch.float32)[None]
        logits = m.margin_head(s)
        mal = torch.sigmoid(m.malignancy_head(logits)).item()
    return torch.softmax(logits[0], 0).numpy(), mal


def test_dismissal_live_moves_the_probabilities_as_the_heads_compute(run, ds):
    case = _test_cases(ds, 1)[0]
    ex = widgets.dismiss_reasoning(run, ds, case, mode="live", top=3)
    expl = explain.explain_case(run, case, data=ds, top=3)
    toggles = list(ex.controls["dismiss"].children)
    assert len(toggles) == 3 and all(isinstance(t, W.ToggleButton) for t in toggles)
    assert ex.prototypes == [p.index for p in expl.prototypes]
    before = ex.current_html()
    as_read = [_shown(p) for p in expl.margin_prob] + [_shown(expl.malignancy_prob)]
    assert _before_after(before) == (as_read, as_read)

    keep = np.ones(len(expl.similarity), np.float32)
    for t, j in zip(toggles[:2], ex.prototypes[:2]):
        t.value = True                              # the reader dismisses prototype j
        keep[j] = 0
        html = ex.current_html()
        prob, mal = _heads(run, expl.similarity, keep)
        assert _before_after(html) == (as_read, [_shown(p) for p in prob] + [_shown(mal)])
        assert f"prototype {j}" in html.split("</div>")[0]
    assert ex.current_html() != before
    got = widgets.dismissed_probabilities(run, expl.similarity, keep)
    np.testing.assert_allclose(got["margin_prob"], _heads(run, expl.similarity, keep)[0], rtol=1e-6)
    # dismissing the evidence for the call lowers its probability
    top_cls = expl.predicted_class
    own = [j for j in ex.prototypes if expl.contributions[top_cls, j] > 0]
    if own:
        k = np.ones_like(keep)
        k[own] = 0
        assert widgets.dismissed_probabilities(run, expl.similarity, k)["margin_prob"][top_cls] < expl.margin_prob[top_cls]
    for t in toggles:
        t.value = False
    assert ex.current_html() == before


def test_dismissal_static_has_one_view_per_single_dismissal(run, ds):
    case = _test_cases(ds, 1)[0]
    ex = widgets.dismiss_reasoning(run, ds, case, mode="static", top=3)
    expl = explain.explain_case(run, case, data=ds, top=3)
    ctl = ex.controls["dismiss"]
    assert isinstance(ctl, W.ToggleButtons) and len(ctl.options) == 4 == len(ex.views)
    (link,) = ex.links
    assert link.source == (ctl, "index") and link.target == (ex.view, "selected_index")
    assert "one at a time" in ex.mode_line.value and "Precomputed" in ex.mode_line.value
    for k, j in enumerate([None] + ex.prototypes):
        keep = np.ones(len(expl.similarity), np.float32)
        if j is not None:
            keep[j] = 0
        prob, mal = _heads(run, expl.similarity, keep)
        assert _before_after(ex.views[k].value)[1] == [_shown(p) for p in prob] + [_shown(mal)]


# ---------------------------------------------------------------------------------------------
# activation precision (Fig. 6)
# ---------------------------------------------------------------------------------------------


def test_activation_precision_live_follows_tau_and_case(run, ds):
    rows = widgets.pick_cases(ds, "test", 2, prefer_fine=True)
    ex = widgets.activation_precision_explorer(run, ds, mode="live", cases=rows, taus=(0.5, 0.95))
    tau, case = ex.controls["tau"], ex.controls["case"]
    assert isinstance(tau, W.SelectionSlider) and tau.value == 0.95
    at_95 = ex.current_html()
    tau.value = 0.5                                 # the reader moves the slider
    at_50 = ex.current_html()
    assert at_50 != at_95 and "data-tau='0.5'" in at_50 and "data-tau='0.95'" in at_95
    expl = explain.explain_case(run, rows[0], data=ds, top=1)
    mask, _ = widgets._relevant(ds, rows[0])
    for html, t in ((at_95, 0.95), (at_50, 0.5)):
        ap = metrics.activation_precision(expl.prototypes[0].activation, mask, t)
        shown = float(re.search(r"data-ap='([0-9.]+)'", html).group(1))
        assert shown == pytest.approx(ap, abs=1e-4)
        assert f"Activation precision {ap:.2f}" in html
    case.value = 1
    assert f"data-case='{ds.ids[rows[1]]}'" in ex.current_html()
    assert all(n <= widgets.AP_PNG_BYTES for n in _png_sizes(ex.current_html()))


def test_activation_precision_static_nests_case_and_tau(run, ds):
    rows = widgets.pick_cases(ds, "test", 2, prefer_fine=True)
    taus = (0.5, 0.9, 0.95)
    ex = widgets.activation_precision_explorer(run, ds, mode="static", cases=rows, taus=taus)
    tau, case = ex.controls["tau"], ex.controls["case"]
    outer = ex.view
    assert len(outer.children) == 2 and all(len(s.children) == 3 for s in outer.children)
    assert len(ex.views) == 6
    assert ex.links[0].source == (case, "index") and ex.links[0].target == (outer, "selected_index")
    assert [l.source for l in ex.links[1:]] == [(tau, "index")] * 2
    assert [l.target for l in ex.links[1:]] == [(s, "selected_index") for s in outer.children]
    # the initial selection agrees with the slider (0.95)
    assert all(s.selected_index == tau.index == 2 for s in outer.children)
    outer.selected_index = 1
    for s in outer.children:                        # what the links do in the browser
        s.selected_index = 0
    html = ex.current_html()
    assert f"data-case='{ds.ids[rows[1]]}'" in html and "data-tau='0.5'" in html


# ---------------------------------------------------------------------------------------------
# prototype gallery, fine-annotation comparison
# ---------------------------------------------------------------------------------------------


def test_prototype_gallery_live_and_static(run, ds):
    protos = [0, int(run.model.num_prototypes) - 1]
    live = widgets.prototype_gallery(run, ds, n_nearest=2, mode="live", prototypes=protos)
    first = live.current_html()
    assert f"data-prototype='{protos[0]}'" in first
    cls = MARGINS[int(run.model.prototype_class[protos[0]])]
    assert cls in first and "weights in the margin layer h1" in first
    w = run.model.margin_head.weight[:, protos[0]].detach().numpy()
    assert all(f"{v:+.2f}" in first for v in w)
    live.controls["prototype"].value = 1
    assert f"data-prototype='{protos[1]}'" in live.current_html()
    static = widgets.prototype_gallery(run, ds, n_nearest=2, mode="static", prototypes=protos)
    assert len(static.views) == 2 and static.links[0].target == (static.view, "selected_index")
    assert all(n <= widgets.GALLERY_PNG_BYTES for v in static.views for n in _png_sizes(v.value))


def test_fine_annotation_comparison_live_and_static(run, ds):
    # the same run twice is enough to test the widget (the models' difference is chapter 7's topic)
    rows = widgets.pick_cases(ds, "test", 2, prefer_fine=True)
    live = widgets.fine_annotation_comparison(run, run, ds, mode="live", cases=rows)
    first = live.current_html()
    assert "with the fine-annotation loss" in first and "without the fine-annotation loss" in first
    live.controls["case"].value = 1
    assert f"data-case='{ds.ids[rows[1]]}'" in live.current_html()
    static = widgets.fine_annotation_comparison(run, run, ds, mode="static", cases=rows)
    assert len(static.views) == 2 and len(static.links) == 1


def test_small_png_fits_the_budget(run, ds):
    from iaiabl_lib import plots

    expl = explain.explain_case(run, _test_cases(ds, 1)[0], data=ds, top=3)
    uri = widgets.figure_uri(plots.plot_case_explanation(expl), max_bytes=20_000)
    assert uri.startswith("data:image/png;base64,")
    assert len(base64.b64decode(uri.split(",", 1)[1])) <= 20_000

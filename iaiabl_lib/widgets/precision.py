"""Where does the model look? The most active part of the map of the prototype a reader sees first
(the most activated prototype of the model's call, ``explain.leading_prototype``) against the
region a radiologist annotated: the paper's activation precision (Eq. 9, Fig. 6), in a reader's
words: "show the most active 5 % of the map: 60 % of it lies inside the annotated region".

The reader sets the percentage with a slider or by typing it in the number box beside it (any
whole percentage from 1 to ``MAX_PERCENT``). Static: every percentage of every case precomputed,
the slider and the box tied to the views in the browser; live: computed on each move.
"""
from __future__ import annotations

import html
from typing import Sequence

import ipywidgets as W
import numpy as np

from ..config import MARGINS
from . import cases as C
from . import images as I
from . import words as T
from .frame import Explorer, dropdown, html_view, link, stack
from .mode import resolve_mode
from ..errors import InputError

__all__ = ["MAX_PERCENT", "DEFAULT_PERCENT", "top_pixels", "marks_layer", "marks_legend", "precision_html", "activation_precision_explorer"]

MAX_PERCENT = 50
"""The largest "most active N %" offered (every whole percentage from 1 up to it)."""
DEFAULT_PERCENT = 5
"""What the paper counts (Eq. 9 with τ = 0.95: the top 5 %)."""
UNDERLAY_PX = 128
"""The region under the marks is encoded at most this many pixels wide: every case has
``MAX_PERCENT`` views; at 224 px (the paper preset) the full image in each would make this explorer
about 9 MB instead of about 4 (measured on the synthetic set prepared at 224 px). The case reader
shows the region at its own resolution."""


def top_pixels(activation: np.ndarray, percent: float) -> np.ndarray:
    """The most active ``percent`` % of a map, as ``metrics.activation_precision`` selects them
    (pixels at or above the map's (1 − percent/100) quantile; ties at the threshold kept)."""
    a = np.asarray(activation, dtype=np.float64)
    return a >= np.quantile(a.ravel(), 1 - percent / 100)


def marks_layer(top: np.ndarray, mask: np.ndarray) -> str:
    from ..plots import MASK_COLOUR, TOP_COLOUR, TOP_INSIDE_COLOUR

    def rgba(hexcolour: str) -> tuple[int, int, int, int]:
        h = hexcolour.lstrip("#")
        return (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16), 255)

    inside = mask > 0
    return I.marks_uri(top.shape, [(top & ~inside, rgba(TOP_COLOUR)), (top & inside, rgba(TOP_INSIDE_COLOUR))],
                       [(inside, rgba(MASK_COLOUR))])


def marks_legend() -> str:
    from ..plots import MASK_COLOUR, TOP_COLOUR, TOP_INSIDE_COLOUR

    def sw(c: str, outline: bool = False) -> str:
        style = f"border:2px solid {c};background:transparent" if outline else f"background:{c}"
        return f"<span class='iaiabl-swatch' style='display:inline-block;width:.9em;height:.9em;vertical-align:middle;{style}'></span>"

    return (f"<div class='iaiabl-legend iaiabl-marks-legend' data-inside='{TOP_INSIDE_COLOUR}' "
            f"data-outside='{TOP_COLOUR}' data-region='{MASK_COLOUR}'>{sw(TOP_INSIDE_COLOUR)} most active, "
            f"inside the annotated region &nbsp; {sw(TOP_COLOUR)} most active, outside it &nbsp; "
            f"{sw(MASK_COLOUR, True)} the annotated region's outline</div>")


def precision_html(ds, i: int, expl, percent: int, show_dataset_ids: bool | None = None) -> str:
    """The view of case ``i`` at "the most active ``percent`` %" of its leading prototype's map."""
    from .. import explain, metrics

    lead = explain.leading_prototype(expl)
    mask, what = C.relevant(ds, i)
    top = top_pixels(lead.activation, percent)
    inside = int((top & (mask > 0)).sum())
    n = int(top.sum())
    ap = float(metrics.activation_precision(lead.activation, mask, 1 - percent / 100))
    frame = I.reading_frame(
        expl.image, [I.Layer(f"most active {percent} % and the annotated region", marks_layer(top, mask),
                             kind="marks", on=True, key="marks")],
        alt=f"{C.case_number(ds, i)}: most active {percent} % of the map", max_px=UNDERLAY_PX)
    cls = MARGINS[lead.cls]
    text = (f"<div class='iaiabl-ap' data-top='{percent}' data-precision='{ap:.4f}' "
            f"data-prototype='{lead.index}'>The most active <b>{percent} %</b> of the map of prototype "
            f"{lead.index} ({T.article(cls)} {html.escape(cls)} prototype, the most active one of the "
            f"model's call, {html.escape(expl.predicted_margin)}): {n} pixels, of which {inside} "
            f"(<b>{T.pct(inside / n if n else 0.0)}</b>) lie inside {html.escape(what)}. The more of "
            "them inside, the more the model looks where the radiologist looked.</div>")
    return "<div class='iaiabl-view'>" + C.case_header(ds, i, show_dataset_ids) + text + frame + marks_legend() + "</div>"


def activation_precision_explorer(run, data=None, split: str = "test", mode: str = "auto",
                                  max_cases: int = 6, cases: Sequence[int | str] | None = None,
                                  percent: int = DEFAULT_PERCENT, max_percent: int = MAX_PERCENT,
                                  show_dataset_ids: bool | None = None) -> "Explorer":
    """A case picker and "show the most active N %" (a slider and a number box): the most active
    pixels of the map of the prototype a reader sees first, against the annotated region (the fine
    annotation where there is one, else the lesion)."""
    from .. import explain

    mode = resolve_mode(mode)
    if not 1 <= int(percent) <= int(max_percent) <= 100:
        raise InputError(f"percent={percent}, max_percent={max_percent}: need 1 <= percent <= max_percent <= 100")
    ds = C.dataset(run, data)
    rows = C.pick_cases(ds, split, max_cases, prefer_fine=True, cases=cases)
    m = int(run.model.num_prototypes)
    expls: dict[int, object] = {}

    def expl_of(k: int):
        if k not in expls:
            expls[k] = explain.explain_case(run, rows[k], data=ds, top=m)
        return expls[k]

    def render(k: int, pc: int) -> str:
        return precision_html(ds, rows[k], expl_of(k), pc, show_dataset_ids)

    case_ctl = dropdown([C.case_number(ds, i).capitalize() for i in rows], width="16em")
    slider = W.IntSlider(value=int(percent), min=1, max=int(max_percent), step=1, readout=False,
                         continuous_update=True, layout=W.Layout(width="20em"))
    box = W.BoundedIntText(value=int(percent), min=1, max=int(max_percent), step=1,
                           layout=W.Layout(width="5.5em"))
    amount = W.HBox([slider, box, W.HTML("<b>% of the map</b>")], layout=W.Layout(align_items="center"))
    controls = {"case": case_ctl, "top": amount}
    labels = {"case": "Case:", "top": "Show the most active"}
    title = "Where does the model look? Its most active pixels against the annotation"
    intro = ("The map is that of the prototype a reader sees first: the most active prototype of "
             f"the model's call. The paper counts the most active {DEFAULT_PERCENT} %; move the "
             f"slider or type a whole percentage from 1 to {max_percent} in the box.")
    demo = C.demo_note(run, ds)
    if mode == "static":
        inner, views, links = [], [], [W.jslink((slider, "value"), (box, "value"))]
        for k in range(len(rows)):
            vs = [html_view(render(k, pc)) for pc in range(1, int(max_percent) + 1)]
            st = stack([vs[0], *vs], selected=int(percent))    # index = the percentage (0 unused)
            views += vs
            inner.append(st)
            links += [link(slider, "value", st), link(box, "value", st)]
        outer = stack(inner)
        links.insert(0, link(case_ctl, "index", outer))
        kb = sum(len(v.value) for v in views) / 1000
        note = (f"{len(rows)} cases × {max_percent} percentages precomputed ({len(views)} views, "
                f"about {kb / 1000:.1f} MB of this page).")
        ex = Explorer(title, mode, note, controls, outer, views, links, intro=intro, labels=labels, demo=demo)
    else:
        W.link((slider, "value"), (box, "value"))
        view = html_view(render(0, int(percent)))

        def redraw(_change=None):
            view.value = render(int(case_ctl.index or 0), int(box.value))

        case_ctl.observe(redraw, names="index")
        box.observe(redraw, names="value")
        ex = Explorer(title, mode, f"{len(rows)} cases; any whole percentage from 1 to {max_percent}.",
                      controls, view, intro=intro, labels=labels, demo=demo)
    ex.slider, ex.number = slider, box
    ex.rows = rows
    return ex

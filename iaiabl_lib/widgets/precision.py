"""Where does the model look? The most active part of the map of the prototype a reader sees first
(the most activated prototype of the model's call, ``explain.leading_prototype``) against the
annotated region (on synthetic data, drawn by the data generator): the paper's activation precision (Eq. 9, Fig. 6), in a reader's
words: "show the most active 5 % of the map: 60 % of it lies inside the annotated region".

The reader sets the percentage with a slider; its value is written beside it. Static: every whole
percentage from 1 to ``MAX_PERCENT`` of every case precomputed and tied to the slider in the
browser; there is no box to type in, because the browser's whole-number box (ipywidgets'
``IntText``) drops a typed decimal point without a word ("2.5" becomes 25). Live: a text box beside
the slider also takes any percentage from 1 to ``MAX_PERCENT``, decimals included ("2.5", or "2,5"
with a decimal comma), parsed by :func:`parse_percent`; anything else is refused with a message
under the box and the view stays as it was. No number the reader gives is ever silently rescaled.
"""
from __future__ import annotations

import html
import re
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

__all__ = ["MAX_PERCENT", "DEFAULT_PERCENT", "parse_percent", "percent_words", "top_pixels", "marks_layer", "marks_legend", "precision_html", "activation_precision_explorer"]

MAX_PERCENT = 50
"""The largest "most active N %" offered (every whole percentage from 1 up to it)."""
DEFAULT_PERCENT = 5
"""What the paper counts (Eq. 9 with τ = 0.95: the top 5 %)."""
UNDERLAY_PX = 128
"""The region under the marks is encoded at most this many pixels wide: every case has
``MAX_PERCENT`` views; at 224 px (the paper preset) the full image in each would make this explorer
about 9 MB instead of about 4 (measured on the synthetic set prepared at 224 px). The case reader
shows the region at its own resolution."""


_NUMBER = re.compile(r"\s*([0-9]+(?:[.,][0-9]*)?|[.,][0-9]+)\s*%?\s*")


def parse_percent(text: str, max_percent: int = MAX_PERCENT) -> tuple[float | None, str]:
    """A typed percentage: ``(value, "")`` when ``text`` is a number from 1 to ``max_percent``
    (decimals with a point or a comma, an optional "%"), else ``(None, message)``, the message
    naming what was typed and what to type instead. Never rounds, truncates or clamps."""
    shown = str(text).strip()
    m = _NUMBER.fullmatch(str(text))
    if m is None:
        what = f"“{shown}” is not a number" if shown else "The box is empty"
        return None, (f"{what}: type a percentage from 1 to {max_percent}, such as 5 or 2.5. "
                      "The view still shows the last percentage accepted.")
    value = float(m.group(1).replace(",", "."))
    if not 1 <= value <= max_percent:
        return None, (f"{shown} is outside 1 to {max_percent}: type a percentage in that range "
                      "(decimals are fine). The view still shows the last percentage accepted.")
    return value, ""


def percent_words(percent: float) -> str:
    """A percentage as the reader typed or picked it: "5", "2.5" (never a rounded figure)."""
    return f"{float(percent):g}"


def top_pixels(activation: np.ndarray, percent: float) -> np.ndarray:
    """The most active ``percent`` % of a map, as Eq. 9 selects them: ``metrics.top_pixels`` with
    τ = 1 − percent/100 (pixels at or above the map's τ-quantile; ties at the threshold kept)."""
    from ..metrics import top_pixels as eq9_top_pixels

    return eq9_top_pixels(np.asarray(activation), 1 - percent / 100)


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


def precision_html(ds, i: int, expl, percent: float, show_dataset_ids: bool | None = None) -> str:
    """The view of case ``i`` at "the most active ``percent`` %" of its leading prototype's map
    (``percent`` any number in (0, 100], written as given: "2.5", never rounded)."""
    from .. import explain, metrics

    lead = explain.leading_prototype(expl)
    mask, what = C.relevant(ds, i)
    top = top_pixels(lead.activation, percent)
    inside = int((top & (mask > 0)).sum())
    n = int(top.sum())
    ap = float(metrics.activation_precision(lead.activation, mask, 1 - percent / 100))
    pc = percent_words(percent)
    frame = I.reading_frame(
        expl.image, [I.Layer(f"most active {pc} % and the annotated region", marks_layer(top, mask),
                             kind="marks", on=True, key="marks")],
        alt=f"{C.case_number(ds, i).capitalize()}: the region of interest, with the most active {pc} % of the map of prototype {lead.index} marked", max_px=UNDERLAY_PX)
    cls = MARGINS[lead.cls]
    text = (f"<div class='iaiabl-ap' data-top='{pc}' data-precision='{ap:.4f}' "
            f"data-prototype='{lead.index}'>The most active <b>{pc} %</b> of the map of prototype "
            f"{lead.index} ({T.article(cls)} {html.escape(cls)} prototype, the most active one of the "
            f"model's call, {html.escape(expl.predicted_margin)}): {n} pixels, of which {inside} "
            f"(<b>{T.pct(inside / n if n else 0.0)}</b>) lie inside {html.escape(what)}. The more of "
            f"them inside, the more the model looks where the annotation lies "
            f"({html.escape(C.record_source(ds))}).</div>")
    return "<div class='iaiabl-view'>" + C.case_header(ds, i, show_dataset_ids) + text + frame + marks_legend() + "</div>"


def _readout(percent: float) -> str:
    return f"<b class='iaiabl-readout' data-top='{percent_words(percent)}'>{percent_words(percent)} % of the map</b>"


def activation_precision_explorer(run, data=None, split: str = "test", mode: str = "auto",
                                  max_cases: int = 6, cases: Sequence[int | str] | None = None,
                                  percent: int = DEFAULT_PERCENT, max_percent: int = MAX_PERCENT,
                                  show_dataset_ids: bool | None = None) -> "Explorer":
    """A case picker and "show the most active N %": the most active pixels of the map of the
    prototype a reader sees first, against the annotated region (the fine annotation where there
    is one, else the lesion). N is set with a slider (whole percentages, written beside it); live,
    a text box also takes any percentage from 1 to ``max_percent``, decimals included, and
    refuses anything else with a message (:func:`parse_percent`). ``percent`` (the first view) and
    ``max_percent`` are whole numbers."""
    from .. import explain

    mode = resolve_mode(mode)
    for name, v in (("percent", percent), ("max_percent", max_percent)):
        if float(v) != int(float(v)):
            raise InputError(f"{name}={v}: the slider takes whole percentages; give a whole number "
                             "(a live notebook's text box also takes decimals such as 2.5)")
    if not 1 <= int(percent) <= int(max_percent) <= 100:
        raise InputError(f"percent={percent}, max_percent={max_percent}: need 1 <= percent <= max_percent <= 100")
    percent, max_percent = int(percent), int(max_percent)
    ds = C.dataset(run, data)
    rows = C.pick_cases(ds, split, max_cases, prefer_fine=True, cases=cases)
    m = int(run.model.num_prototypes)
    expls: dict[int, object] = {}

    def expl_of(k: int):
        if k not in expls:
            expls[k] = explain.explain_case(run, rows[k], data=ds, top=m)
        return expls[k]

    def render(k: int, pc: float) -> str:
        return precision_html(ds, rows[k], expl_of(k), pc, show_dataset_ids)

    case_ctl = dropdown([C.case_number(ds, i).capitalize() for i in rows], width="16em")
    # readout=False: ipywidgets' own readout is editable and reads a typed "2.5" as 2, silently
    slider = W.IntSlider(value=percent, min=1, max=max_percent, step=1, readout=False,
                         continuous_update=True, layout=W.Layout(width="20em"))
    labels = {"case": "Case:", "top": "Show the most active"}
    title = "Where does the model look? Its most active pixels against the annotation"
    intro = ("The map is that of the prototype a reader sees first: the most active prototype of "
             f"the model's call. The paper counts the most active {DEFAULT_PERCENT} %. Move the "
             "slider (drag it, or select it and press the arrow keys) to choose how much of the map "
             "to show")
    demo = C.demo_note(run, ds)
    if mode == "static":
        # the value beside the slider: one small view per percentage, switched by the slider
        readout = stack([html_view(_readout(pc)) for pc in [1, *range(1, max_percent + 1)]], selected=percent)
        readout.layout = W.Layout(width="auto")
        amount = W.HBox([slider, readout], layout=W.Layout(align_items="center"))
        box, message = None, None
        intro += (f": every whole percentage from 1 to {max_percent} is precomputed on this page. "
                  "A live notebook also takes a typed percentage, decimals included (such as 2.5).")
        inner, views, links = [], [], [link(slider, "value", readout)]
        for k in range(len(rows)):
            vs = [html_view(render(k, pc)) for pc in range(1, max_percent + 1)]
            st = stack([vs[0], *vs], selected=percent)    # index = the percentage (0 unused)
            views += vs
            inner.append(st)
            links.append(link(slider, "value", st))
        outer = stack(inner)
        links.insert(0, link(case_ctl, "index", outer))
        kb = sum(len(v.value) for v in views) / 1000
        note = (f"{len(rows)} cases × {max_percent} percentages precomputed ({len(views)} views, "
                f"about {kb / 1000:.1f} MB of this page).")
        ex = Explorer(title, mode, note, {"case": case_ctl, "top": amount}, outer, views, links,
                      intro=intro, labels=labels, demo=demo)
    else:
        readout = html_view(_readout(percent))
        readout.layout = W.Layout(width="auto")
        box = W.Text(value=str(percent), continuous_update=False, placeholder="e.g. 2.5",
                     layout=W.Layout(width="6em"))
        message = html_view("")
        amount = W.VBox([W.HBox([slider, readout], layout=W.Layout(align_items="center")),
                         W.HBox([W.HTML("or type a percentage:"), box, W.HTML("and press Enter")],
                                layout=W.Layout(align_items="center")), message])
        intro += (f", or type any percentage from 1 to {max_percent} in the box, decimals included "
                  "(2.5 or 2,5).")
        shown = {"percent": float(percent), "syncing": False}

        def redraw(_change=None):
            view.value = render(int(case_ctl.index or 0), shown["percent"])
            readout.value = _readout(shown["percent"])

        def from_slider(change):
            if shown["syncing"]:
                return
            shown["percent"] = float(change["new"])
            shown["syncing"] = True
            box.value = str(change["new"])          # the box shows what the view shows
            shown["syncing"] = False
            message.value = ""
            redraw()

        def from_box(change):
            if shown["syncing"]:
                return
            value, why = parse_percent(change["new"], max_percent)
            if value is None:
                message.value = f"<div class='iaiabl-input-message' role='alert'>{html.escape(why)}</div>"
                return
            message.value = ""
            shown["percent"] = value
            shown["syncing"] = True
            slider.value = min(max_percent, max(1, int(round(value))))   # the nearest mark; the view says the exact value
            shown["syncing"] = False
            redraw()

        view = html_view(render(0, float(percent)))
        case_ctl.observe(redraw, names="index")
        slider.observe(from_slider, names="value")
        box.observe(from_box, names="value")
        ex = Explorer(title, mode, f"{len(rows)} cases; any percentage from 1 to {max_percent}, decimals included.",
                      {"case": case_ctl, "top": amount}, view, intro=intro, labels=labels, demo=demo)
    ex.slider, ex.number, ex.message, ex.readout = slider, box, message, readout
    ex.rows = rows
    return ex

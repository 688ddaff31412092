"""The same case under two models, side by side (the paper's Fig. 4: trained with and without the
fine-annotation loss): each model's reading, and where its leading prototype (the most active one
of its call) looks, against the annotated region."""
from __future__ import annotations

import html
from typing import Sequence

from ..config import MARGINS
from . import cases as C
from . import images as I
from . import words as T
from .frame import Explorer, dropdown, html_view, link, stack
from .mode import resolve_mode
from .precision import DEFAULT_PERCENT, marks_layer, marks_legend, top_pixels

__all__ = ["fine_annotation_comparison", "comparison_html"]


def _column(run, ds, i: int, name: str) -> str:
    from .. import explain, metrics

    expl = explain.explain_case(run, i, data=ds, top=int(run.model.num_prototypes))
    lead = explain.leading_prototype(expl)
    mask, what = C.relevant(ds, i)
    top = top_pixels(lead.activation, DEFAULT_PERCENT)
    ap = float(metrics.activation_precision(lead.activation, mask, 1 - DEFAULT_PERCENT / 100))
    frame = I.reading_frame(
        expl.image,
        [I.heat_layer(f"heat map: prototype {lead.index}", lead.activation, key=str(lead.index), on=True,
                      what=f"where prototype {lead.index} of the model {name} matches {C.case_number(ds, i)}"),
         I.Layer(f"most active {DEFAULT_PERCENT} % and the annotated region", marks_layer(top, mask), kind="marks",
                 key="marks")],
        px=I.COMPARE_PX, alt=f"{C.case_number(ds, i).capitalize()}: the region of interest, read by the model {name}")
    cls = MARGINS[lead.cls]
    return (f"<div class='iaiabl-model' style='flex:0 1 {I.COMPARE_PX}px'>"
            f"<b>{html.escape(name.capitalize())}</b>" + frame
            + T.margin_lines(expl.margin_prob, expl.predicted_class) + T.malignancy_line(expl.malignancy_prob)
            + f"<div class='iaiabl-ap' data-precision='{ap:.4f}' data-prototype='{lead.index}'>Its most active "
              f"prototype for its call is prototype {lead.index} ({T.article(cls)} {html.escape(cls)} prototype); "
              f"<b>{T.pct(ap)}</b> of the most active {DEFAULT_PERCENT} % of its map lies inside "
              f"{html.escape(what)}.</div></div>")


def comparison_html(run_a, run_b, ds, i: int, names: tuple[str, str], show_dataset_ids: bool | None = None) -> str:
    cols = "".join(_column(r, ds, i, n) for r, n in zip((run_a, run_b), names))
    return ("<div class='iaiabl-view'>" + C.case_header(ds, i, show_dataset_ids)
            + f"<div style='display:flex;gap:1em;flex-wrap:wrap'>{cols}</div>"
            + marks_legend() + "</div>")


def fine_annotation_comparison(run_with, run_without, data=None, split: str = "test",
                               mode: str = "auto", max_cases: int = C.MAX_CASES,
                               cases: Sequence[int | str] | None = None,
                               names: tuple[str, str] = ("with the fine-annotation loss",
                                                         "without the fine-annotation loss"),
                               show_dataset_ids: bool | None = None) -> Explorer:
    """Pick a case: the same case under the model trained with the fine-annotation loss and the one
    trained without (paper Fig. 4): each model's reading and the heat map of its leading prototype,
    with the share of its most active pixels inside the annotated region."""
    mode = resolve_mode(mode)
    ds = C.dataset(run_with, data)
    rows = C.pick_cases(ds, split, max_cases, prefer_fine=True, cases=cases)
    control = dropdown([C.case_number(ds, i).capitalize() for i in rows], width="16em")
    cache: dict[int, str] = {}

    def render(k: int) -> str:
        if k not in cache:
            cache[k] = comparison_html(run_with, run_without, ds, rows[k], names, show_dataset_ids)
        return cache[k]

    title = "Two models, one case: with and without the fine-annotation loss"
    demo = C.demo_note(run_with, ds)
    if mode == "static":
        views = [html_view(render(k)) for k in range(len(rows))]
        outer = stack(views)
        ex = Explorer(title, mode, f"{len(rows)} cases precomputed.", {"case": control}, outer, views,
                      [link(control, "index", outer)], labels={"case": "Case:"}, demo=demo)
    else:
        view = html_view(render(0))
        control.observe(lambda ch: setattr(view, "value", render(int(ch["new"] or 0))), names="index")
        ex = Explorer(title, mode, f"{len(rows)} cases.", {"case": control}, view,
                      labels={"case": "Case:"}, demo=demo)
    ex.rows = rows
    return ex

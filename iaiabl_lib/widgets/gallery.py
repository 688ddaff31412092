"""The prototype gallery: what each prototype is, where it comes from, whether to trust it, and
which training cases it matches best.

Prototypes that fail their health check (``explain.prototype_health``, the library's one rule: most
of their strongest activation lies off the mass and its margin in the training cases of their
class, their patch was taken from the image border, or the model counts them against their own
margin or against every margin) are marked and listed first, each with one sentence on why a reader
should distrust it; an overview table above the picker lists every prototype in that order.
"""
from __future__ import annotations

import html
from typing import Sequence

import numpy as np

from ..config import MARGINS
from . import cases as C
from . import images as I
from . import words as T
from .frame import Explorer, dropdown, html_view, link, stack
from .mode import resolve_mode

__all__ = ["prototype_gallery", "health_order", "health_table"]


def health_order(health: Sequence) -> list:
    """Flagged prototypes first (lowest lesion precision first), then the others by index."""
    flagged = sorted((h for h in health if h.flagged), key=lambda h: (h.margin_ap, h.index))
    return flagged + sorted((h for h in health if not h.flagged), key=lambda h: h.index)


def _threshold_words() -> str:
    from ..explain import OFF_LESION_THRESHOLD

    return (f"flagged when less than {T.pct(OFF_LESION_THRESHOLD)} of its most active 5 % lies on the "
            "mass or along its edge (the margin) in the training cases of its class, when its patch "
            "lies on the image border, or when the model counts a match with it against its own margin "
            "or against every margin")


def health_table(order: Sequence) -> str:
    """Every prototype, flagged ones first: its class, its lesion precision, the sentence."""
    rows = []
    for h in order:
        mark = "⚠ " if h.flagged else ""
        why = html.escape(T.distrust_sentence(h)) if h.flagged else "no warning"
        rows.append(f"<tr class='iaiabl-health' data-prototype='{h.index}' data-flagged='{int(h.flagged)}'>"
                    f"<td>{mark}prototype {h.index}</td><td>{html.escape(MARGINS[h.cls])}</td>"
                    f"<td class='num'>{T.pct(h.lesion_ap) if np.isfinite(h.lesion_ap) else 'n/a'}</td>"
                    f"<td class='num'>{T.pct(h.margin_ap) if np.isfinite(h.margin_ap) else 'n/a'}</td>"
                    f"<td>{why}</td></tr>")
    return ("<table class='iaiabl-table iaiabl-health-table'><tr><th>prototype</th><th>its margin</th>"
            "<th>most active 5 % on the mass</th><th>… on the mass or its margin</th>"
            "<th>why to distrust it</th></tr>" + "".join(rows) + "</table>"
            f"<div class='iaiabl-caption'>A prototype is {_threshold_words()}.</div>")


def _counts_html(weights: np.ndarray, j: int) -> str:
    parts = []
    for c in range(weights.shape[0]):
        w = float(weights[c, j])
        if abs(w) < 0.005:
            continue
        parts.append(f"{'for' if w > 0 else 'against'} {html.escape(MARGINS[c])} (weight {w:+.2f})")
    return ("When it matches a case, the model counts it " + ("; ".join(parts) or "for nothing")
            + ": the closer the match, the more points.")


def _view(ds, e, h, weights, show_dataset_ids) -> str:
    cls = e.class_name
    side = int(ds.images.shape[-1])
    scale = I.READING_PX / side
    src_row = C.source_row(ds, e.source_id, None)
    src_img = e.source_image if e.source_image is not None else (None if src_row is None else ds.images[src_row])
    flag = (f"<div class='iaiabl-flag'>⚠ {html.escape(T.distrust_sentence(h))}</div>" if h is not None and h.flagged
            else "<div>No warning.</div>")
    measured = ""
    if h is not None:
        measured = (f"<div class='iaiabl-caption'>{T.pct(h.lesion_ap)} of its most active 5 % lies on the "
                    f"mass, {T.pct(h.margin_ap)} on the mass or its margin, in the training cases of its class"
                    + (f"; {T.pct(h.self_ap)} on its own source case" if h.self_ap is not None else "")
                    + (f"; {h.merged} duplicate prototype(s) were merged into it" if h.merged else "")
                    + f". A prototype is {_threshold_words()}.</div>")
    head = (f"<div class='iaiabl-prototype' data-prototype='{e.index}' data-flagged='{int(bool(h and h.flagged))}'>"
            f"<b>Prototype {e.index}</b>: {T.article(cls)} {html.escape(cls)} prototype, a patch of a "
            "training case.</div>")
    pictures = ""
    if src_img is not None:
        source = html.unescape(C.source_caption(ds, src_row))
        pictures = (I.patch_figure(src_img, e.box, scale, f"prototype {e.index}", cls="iaiabl-proto-patch",
                                   alt=f"prototype {e.index} ({cls}): its patch of {source}, enlarged")
                    + I.thumbnail(src_img, e.box, "its source: " + C.source_caption(ds, src_row),
                                  px=2 * I.THUMB_PX))
    details = ""
    if src_row is not None and C.show_ids(ds, show_dataset_ids):
        details = C.dataset_id_line(ds, src_row, "its training case's ")
    near = []
    for k, n in enumerate(e.neighbours, 1):
        facts = C.source_caption(ds, n.index)
        near.append("<div class='iaiabl-row iaiabl-neighbour'>"
                    + I.patch_figure(n.image, n.high_activation_box, scale, "the part that matches best",
                                     cls="iaiabl-case-patch",
                                     alt=f"closest match #{k}, {html.unescape(facts)}: the part that matches "
                                         f"prototype {e.index} best, enlarged")
                    + I.thumbnail(n.image, n.high_activation_box, f"closest match #{k}: {facts}", heat=n.activation,
                                  heat_what=f"where prototype {e.index} matches {C.case_number(ds, n.index)}, its closest match #{k}")
                    + "</div>")
    return ("<div class='iaiabl-view'>" + head + flag + measured
            + f"<div class='iaiabl-row'>{pictures}</div>" + details
            + f"<div>{_counts_html(weights, e.index)}</div>"
            + "<div style='margin-top:8px'><b>Training cases it matches most closely</b> (heat map over "
              "each, the matching part boxed and shown beside it at the prototype's scale)</div>"
            + "".join(near) + "</div>")


def prototype_gallery(run, data=None, n_nearest: int = 3, mode: str = "auto", split: str = "train",
                      prototypes: Sequence[int] | None = None, show_dataset_ids: bool | None = None) -> Explorer:
    """Pick a prototype (flagged ones first): its patch and its source training case at the same
    scale, its health check, how the model counts it, and its ``n_nearest`` closest training cases
    of ``split`` (``explain.prototype_gallery``). ``prototypes``: a subset (default: all)."""
    from .. import explain

    mode = resolve_mode(mode)
    ds = C.dataset(run, data)
    health = {h.index: h for h in C.health(run, ds)}
    chosen = list(range(int(run.model.num_prototypes))) if prototypes is None else [int(j) for j in prototypes]
    order = health_order([health[j] for j in chosen])
    entries = {e.index: e for e in explain.prototype_gallery(run, ds, n_nearest=n_nearest, split=split,
                                                               prototypes=[h.index for h in order])}
    weights = run.model.margin_head.weight.detach().float().cpu().numpy()
    labels = [("⚠ " if h.flagged else "") + f"prototype {h.index} · {MARGINS[h.cls]}"
              + (" (distrust)" if h.flagged else "") for h in order]
    control = dropdown(labels, width="22em")
    cache: dict[int, str] = {}

    def render(k: int) -> str:
        if k not in cache:
            j = order[k].index
            cache[k] = _view(ds, entries[j], health.get(j), weights, show_dataset_ids)
        return cache[k]

    n_flag = sum(h.flagged for h in order)
    intro = (f"{n_flag} of {len(order)} prototypes carry a warning and are listed first."
             + health_table(order))
    title = "Prototype gallery: what each prototype is, and whether to trust it"
    demo = C.demo_note(run, ds)
    if mode == "static":
        views = [html_view(render(k)) for k in range(len(order))]
        outer = stack(views)
        ex = Explorer(title, mode, f"All {len(order)} prototypes precomputed.", {"prototype": control},
                      outer, views, [link(control, "index", outer)], intro=intro,
                      labels={"prototype": "Prototype:"}, demo=demo)
    else:
        view = html_view(render(0))
        control.observe(lambda ch: setattr(view, "value", render(int(ch["new"] or 0))), names="index")
        ex = Explorer(title, mode, f"{len(order)} prototypes.", {"prototype": control}, view, intro=intro,
                      labels={"prototype": "Prototype:"}, demo=demo)
    ex.order = [h.index for h in order]
    ex.health = [health[j] for j in ex.order]
    return ex

"""The case reader: pick a case, read it large, see the model's reading and its evidence, and dismiss
what looks wrong (the paper's Fig. 3 and Fig. 1e, together, for every case).

For each case:

* the region of interest, large and without overlay; buttons over it show the heat map of any
  prototype listed below, the part of this case it matches most closely boxed; a click enlarges it
  (:func:`images.reading_frame`); under it the whole mammogram, shrunk, the region boxed, with a
  scale bar in millimetres (``explain.context.whole_view``, or a sentence saying why it is not there);
* under the case's number, the other views of the same lesion (CC, MLO), a button for each that
  the explorer offers (:func:`cases.other_views_html`);
* beside it (under it where the page is narrow), the model's reading (margin probabilities in
  words, the malignancy estimate) and what if: dismiss prototypes and read the model again, the
  result shown there, next to the image;
* below, the evidence for the model's call and against it: each prototype with the patch of this case it
  matches and the prototype itself (a patch of a training case) at the same scale, that training
  case with its view, laterality and outcome, the points it adds or takes away, a warning when its
  health check failed (``explain.prototype_health``), and what dismissing it alone does;
What if (``explain.dismissal``: the model's own heads on the similarities with the dismissed ones
set to 0): the buttons are exactly the prototypes of the evidence rows, in their order, those that
failed their health check marked ⚠ (the one rule, ``explain.prototype_health``). Prototypes not
listed whose dismissal alone would change the reading are named under the buttons. Live: any set.
Static: any one and any pair, all precomputed (at most ``MAX_DISMISS`` prototypes: ``top`` at most
3 for and 3 against; the mode line states what that costs in page size).
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any, Sequence

import ipywidgets as W
import numpy as np

from ..config import MARGIN_WORDS, MARGINS
from . import access as A
from . import cases as C
from . import images as I
from . import quality as Q
from . import words as T
from .frame import MAX_DISMISS, Explorer, dropdown, html_view, labelled, link, stack
from .mode import resolve_mode
from ..errors import InputError

__all__ = ["MAX_DISMISS", "CaseReading", "read_case", "case_explorer", "dismiss_reasoning"]



@dataclass
class CaseReading:
    """Everything the case reader shows about one case, computed once."""

    row: int
    expl: Any                          # explain.CaseExplanation, every prototype listed
    evidence_for: list = field(default_factory=list)      # PrototypeEvidence, adds to the call
    evidence_against: list = field(default_factory=list)  # PrototypeEvidence, takes from the call
    singles: dict = field(default_factory=dict)           # prototype -> explain.Dismissal of it alone
    inert: list[int] = field(default_factory=list)        # its dismissal alone changes nothing visible
    elsewhere: list[int] = field(default_factory=list)    # not listed, but its dismissal alone changes the reading
    whole: Any = None                                     # explain.context.WholeView: the whole mammogram, shrunk

    @property
    def call(self) -> str:
        return MARGINS[self.expl.predicted_class]

    @property
    def offered(self) -> list[int]:
        """The prototypes a reader can dismiss: those of the evidence rows, in their order."""
        return [p.index for p in self.evidence_for + self.evidence_against]


def _changes_reading(d) -> bool:
    """Whether a dismissal changes what the reader sees: the call, or any percentage shown."""
    if d.call_changes:
        return True
    if any(T.pct(b) != T.pct(a) for b, a in zip(d.before_margin_prob, d.margin_prob)):
        return True
    return (d.malignancy_prob is not None and d.before_malignancy_prob is not None
            and T.pct(d.before_malignancy_prob) != T.pct(d.malignancy_prob))


def read_case(run, ds, i: int, top: int = 3) -> CaseReading:
    """Explain case ``i`` with every prototype, sort its evidence for and against the model's call
    (at most ``top`` each, by points), and dismiss each prototype alone."""
    from .. import explain
    from ..explain.context import whole_view

    m = int(run.model.num_prototypes)
    expl = explain.explain_case(run, i, data=ds, top=m)
    by_index = {p.index: p for p in expl.prototypes}
    contrib = expl.contributions[expl.predicted_class]
    order = np.argsort(-contrib, kind="stable")
    pos = [by_index[int(j)] for j in order if contrib[j] >= 0.005][:top]
    neg = [by_index[int(j)] for j in order[::-1] if contrib[j] <= -0.005][:top]
    singles = {j: explain.dismissal(run, expl, [j]) for j in range(m)}
    listed = {p.index for p in pos + neg}
    inert = [j for j in range(m) if not _changes_reading(singles[j])]
    elsewhere = [j for j in range(m) if j not in listed and j not in inert]
    elsewhere.sort(key=lambda j: (-singles[j].call_changes, -singles[j].largest_change, j))
    return CaseReading(i, expl, pos, neg, singles, inert, elsewhere, whole_view(ds, i))


# ---------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------


def _proto_name(expl, j: int) -> str:
    return f"prototype {j} ({MARGINS[int(expl.prototype_class[j])]})"


def _names(expl, js: Sequence[int]) -> str:
    names = [_proto_name(expl, j) for j in js]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _call_sentence(d) -> str:
    before, after = MARGINS[int(np.argmax(d.before_margin_prob))], MARGINS[d.predicted_class]
    if after == before:
        return f"The model's call stays <b>{html.escape(after)}</b>."
    return f"The model's call changes from {html.escape(before)} to <b>{html.escape(after)}</b>."


def _flag_html(h) -> str:
    sentence = T.distrust_sentence(h)
    return f"<div class='iaiabl-flag'>⚠ {html.escape(sentence)}</div>" if sentence else ""


def _moves(d) -> str:
    """The percentages a dismissal changes: "spiculated 62 % → 40 %, malignant 30 % → 25 %"."""
    pairs = [(MARGINS[c], b, a) for c, (b, a) in enumerate(zip(d.before_margin_prob, d.margin_prob))]
    if d.malignancy_prob is not None and d.before_malignancy_prob is not None:
        pairs.append(("malignant", d.before_malignancy_prob, d.malignancy_prob))
    return ", ".join(f"{html.escape(name)} {T.pct(b)} → {T.pct(a)}" for name, b, a in pairs if T.pct(b) != T.pct(a))


def _single_line(reading: CaseReading, j: int) -> str:
    if j in reading.inert:
        return "Dismissing it alone changes nothing you can see."
    d = reading.singles[j]
    return f"Dismissing it alone: {_moves(d)}. {_call_sentence(d)}"


def _evidence_row(reading: CaseReading, p, sign: str, ds, health: dict, scale: float) -> str:
    expl = reading.expl
    src_row = C.source_row(ds, p.source_id, p.source_index)
    src_img = p.source_image if p.source_image is not None else (None if src_row is None else ds.images[src_row])
    h = health.get(p.index)
    cls_name = p.class_name
    number = C.case_number(ds, reading.row)
    pictures = I.patch_figure(expl.image, p.case_box, scale, "this case: the part it matches",
                              cls="iaiabl-case-patch",
                              alt=f"the part of {number} that prototype {p.index} matches most closely, enlarged")
    if src_img is not None:
        source = html.unescape(C.source_caption(ds, src_row))
        pictures += I.patch_figure(src_img, p.box, scale, f"prototype {p.index}: a patch of a training case",
                                   cls="iaiabl-proto-patch",
                                   alt=f"prototype {p.index} ({cls_name}): its patch of {source}, at the same scale")
        pictures += I.thumbnail(src_img, p.box, "its source: " + C.source_caption(ds, src_row),
                                alt=f"prototype {p.index}'s source, {source}: the whole region of interest, "
                                    "the prototype's patch outlined in yellow")
    c = expl.predicted_class
    text = (f"<b>Prototype {p.index}</b>, {T.article(cls_name)} {html.escape(cls_name)} prototype, "
            f"<b>{T.points_sentence(expl.contributions[c, p.index], MARGINS[c])}</b> "
            f"(how closely it matches this case, {p.similarity:.2f}, times the weight the model gives "
            f"such a match for {html.escape(MARGINS[c])}, {expl.weights[c, p.index]:+.2f})."
            + _flag_html(h) + f"<div>{_single_line(reading, p.index)}</div>")
    return (f"<div class='iaiabl-row iaiabl-evidence' data-prototype='{p.index}' data-sign='{sign}' "
            f"data-flagged='{int(bool(h and h.flagged))}'>{pictures}<div class='iaiabl-text'>{text}</div></div>")


@dataclass
class CaseParts:
    """The parts of a case view (HTML): the header, the reading frame, the model's reading, the
    evidence rows. The view puts the reading and what if beside the frame (``side_by_side``)."""

    header: str
    frame: str
    reading: str
    evidence: str


def case_parts(ds, reading: CaseReading, health: dict, show_dataset_ids: bool | None = None,
               quality: str = "", shown: Sequence[int] | None = None) -> CaseParts:
    """The header (the recorded margin behind a click, with whether the model's call agrees; the
    other views of the lesion, buttons for those among ``shown``, the rows the explorer offers), the
    large region of interest with its heat maps (each boxing the part it matches) and the whole
    mammogram under it, the model's reading (``quality``, the line on how good the model is,
    first), and the evidence for and against its call."""
    from ..explain.context import whole_view, whole_view_html

    expl = reading.expl
    side = int(expl.image.shape[-1])
    scale = I.READING_PX / side
    listed = reading.evidence_for + reading.evidence_against
    number = C.case_number(ds, reading.row)
    layers = [I.heat_layer(f"heat map: prototype {p.index}", p.activation, key=str(p.index),
                           what=f"where prototype {p.index} ({p.class_name}) matches {number}", box=p.case_box)
              for p in listed]
    frame = I.reading_frame(
        expl.image, layers,
        alt=f"{number.capitalize()}: the region of interest around the mass, {side} × {side} pixels",
        caption=(f"The region of interest as the model sees it ({side} × {side} pixels), shown "
                 f"{scale:g} times enlarged; with a heat map, a yellow box marks the part that matches "
                 "the prototype most closely. Click the image (or press Enter on it) to enlarge it to "
                 "the window; Escape shrinks it."))
    whole = reading.whole if reading.whole is not None else whole_view(ds, reading.row)
    frame = (f"<div class='iaiabl-read-roi' style='width:{I.READING_PX}px'>{frame}</div>"
             + whole_view_html(whole, number.capitalize()))
    call = html.escape(reading.call)
    model = (quality + "<div><b>The model's reading</b></div>"
             + T.margin_lines(expl.margin_prob, expl.predicted_class) + T.malignancy_line(expl.malignancy_prob))
    parts = [f"<div style='margin-top:8px'><b>Evidence for {call}</b>: the prototypes that add "
             "most to the model's score for its call (points add up to the score; the highest "
             "score is the call)</div>"]
    parts += [_evidence_row(reading, p, "for", ds, health, scale) for p in reading.evidence_for] or \
        ["<div><i>No prototype adds to this call.</i></div>"]
    if reading.evidence_against:
        parts.append(f"<div style='margin-top:8px'><b>Evidence against {call}</b></div>")
        parts += [_evidence_row(reading, p, "against", ds, health, scale) for p in reading.evidence_against]
    header = (C.case_header(ds, reading.row, show_dataset_ids, call=expl.predicted_class)
              + C.other_views_html(ds, reading.row, shown))
    return CaseParts(header, frame, model, "".join(parts))


WHATIF_TITLE = "<div class='iaiabl-whatif-title'><b>What if you dismiss part of the evidence?</b></div>"


def side_by_side(parts: CaseParts, whatif: str) -> str:
    """A case view: the header; the frame with, beside it (under it where the page is narrower
    than both), the model's reading and ``whatif`` (HTML); then the evidence rows."""
    return ("<div class='iaiabl-view'>" + parts.header
            + f"<div class='iaiabl-read-row'><div class='iaiabl-read-image'>{parts.frame}</div>"
            + f"<div class='iaiabl-read-side'>{parts.reading}{whatif}</div></div>"
            + parts.evidence + "</div>")


def case_html(ds, reading: CaseReading, health: dict, show_dataset_ids: bool | None = None,
              whatif: str = "", quality: str = "", shown: Sequence[int] | None = None) -> str:
    """A whole case view (:func:`case_parts` laid out by :func:`side_by_side`)."""
    return side_by_side(case_parts(ds, reading, health, show_dataset_ids, quality, shown), whatif)


def whatif_html(reading: CaseReading, dismissal) -> str:
    """The reading with ``dismissal.dismissed`` switched off, beside the reading as made."""
    expl = reading.expl
    d = dismissal
    rows = []
    for c in range(len(MARGINS)):
        rows.append(
            f"<tr class='iaiabl-dismiss-{MARGINS[c]}'><td>the margin is {html.escape(MARGIN_WORDS[MARGINS[c]])}</td>"
            f"<td class='num'><span class='iaiabl-before'>{T.pct(d.before_margin_prob[c])}</span></td>"
            f"<td class='num'>{T.bar(d.margin_prob[c], T.class_colour(c))}"
            f"<b class='iaiabl-after'>{T.pct(d.margin_prob[c])}</b></td>"
            f"<td>{T.change(d.before_margin_prob[c], d.margin_prob[c])}</td></tr>")
    if d.malignancy_prob is not None and d.before_malignancy_prob is not None:
        rows.append(
            "<tr class='iaiabl-dismiss-malignancy'><td>the mass is malignant</td>"
            f"<td class='num'><span class='iaiabl-before'>{T.pct(d.before_malignancy_prob)}</span></td>"
            f"<td class='num'>{T.bar(d.malignancy_prob, '#b2182b')}<b class='iaiabl-after'>{T.pct(d.malignancy_prob)}</b></td>"
            f"<td>{T.change(d.before_malignancy_prob, d.malignancy_prob)}</td></tr>")
    if d.dismissed:
        what = f"Dismissed: {_names(expl, d.dismissed)}. " + _call_sentence(d)
    else:
        what = ("Nothing dismissed: the model's own reading. The model's call: "
                f"<b>{html.escape(MARGINS[d.predicted_class])}</b>.")
    return (f"<div class='iaiabl-view iaiabl-whatif'><div class='iaiabl-dismissed' "
            f"data-dismissed='{','.join(map(str, d.dismissed))}' data-call='{MARGINS[d.predicted_class]}'>"
            f"{what}</div><table class='iaiabl-table iaiabl-dismiss-table'><tr><th>the model's estimated "
            "probability that …</th><th>as read</th><th>after dismissal</th><th>change</th></tr>"
            + "".join(rows) + "</table></div>")


def _button_text(expl, j: int, health: dict) -> tuple[str, str]:
    """A dismiss button's text and accessible name: "⚠ prototype 3 (spiculated)" when its health
    check failed (``explain.prototype_health``, the one rule)."""
    h = health.get(j)
    name = _proto_name(expl, j)
    if h is not None and h.flagged:
        return f"⚠ {name}", f"{name}, flagged: distrust it"
    return name, ""


def _whatif_notes(reading: CaseReading, health: dict) -> str:
    """Under the buttons: what ⚠ means (when a button carries it), and the prototypes not listed as
    evidence whose dismissal alone would change the reading."""
    expl = reading.expl
    parts = []
    if any((h := health.get(j)) is not None and h.flagged for j in reading.offered):
        parts.append("<div class='iaiabl-flag-note'>⚠ marks a prototype that failed its health check "
                     "(its evidence row says why).</div>")
    if reading.elsewhere:
        parts.append(f"<div class='iaiabl-elsewhere' data-prototypes='{','.join(map(str, reading.elsewhere))}'>"
                     f"Not listed as evidence, but dismissing {_names(expl, reading.elsewhere)} alone would also "
                     "change the reading (a notebook can dismiss it: <code>explain.dismissal</code>).</div>")
    return "<div class='iaiabl-caption'>" + "".join(parts) + "</div>" if parts else ""


# ---------------------------------------------------------------------------------------------
# The explorer
# ---------------------------------------------------------------------------------------------


@dataclass
class WhatIf:
    """A case's dismissal controls and views (static mode): two rows of buttons ("Dismiss:" and
    "and also dismiss:", each "nothing" then the prototypes offered), hidden radio buttons under
    them, and one precomputed view per set of at most two prototypes, chosen by the style sheet
    (``frame._whatif_rules``); the buttons are labels made keyboard buttons (:mod:`.access`)."""

    html: str                          # the controls and every view of the case
    views: dict                        # frozenset of prototypes -> the view's HTML
    offered: list[int]


def static_whatif_html(run, reading: CaseReading, health: dict) -> WhatIf:
    """The what-if part of a case view (static): a button for each prototype of the evidence rows
    (flagged ones marked), every single and pair precomputed."""
    from .. import explain

    expl = reading.expl
    offered = reading.offered
    if len(offered) > MAX_DISMISS:
        raise InputError(f"{len(offered)} prototypes listed as evidence: a static page has dismiss "
                         f"buttons for at most {MAX_DISMISS}")
    choice = [None] + offered
    group = I._uid("whatif")
    views: dict[frozenset, str] = {}
    blocks = []
    for a in range(len(choice)):
        for b in range(a, len(choice)):
            if a == b and a:
                continue                            # {a, a} is {a}: the view (0, a)
            key = frozenset(j for j in (choice[a], choice[b]) if j is not None)
            views[key] = whatif_html(reading, explain.dismissal(run, expl, sorted(key)))
            blocks.append(f"<div class='iaiabl-wi iaiabl-wi-{a}-{b}'>{views[key]}</div>")
    inputs, rows = [], []
    for row, title in (("first", "Dismiss:"), ("second", "and also dismiss:")):
        labels = []
        for k, j in enumerate(choice):
            rid = f"{group}-{row}-{k}"
            inputs.append(f"<input type='radio' name='{group}-{row}' id='{rid}' class='iaiabl-{row}-{k}'"
                          f"{' checked' if k == 0 else ''}>")
            if j is None:
                text, name, flagged = "nothing", "", 0
            else:
                (text, name), flagged = _button_text(expl, j, health), int(bool(health.get(j) and health[j].flagged))
            labels.append(A.toggle_label(rid, html.escape(text), k == 0, f"iaiabl-{row}-{k}",
                                         f"data-prototype='{'' if j is None else j}' data-flagged='{flagged}'",
                                         label=name))
        rows.append(f"<div class='iaiabl-picks iaiabl-{row}-row' role='group' aria-label='{title[:-1]}'>"
                    f"<b>{title}</b> " + "".join(labels) + "</div>")
    body = (f"<div class='iaiabl-whatif-box' {A.handlers()}>" + WHATIF_TITLE + "".join(inputs) + "".join(rows)
            + "<div class='iaiabl-wi-views' aria-live='polite'>" + "".join(blocks) + "</div>"
            + _whatif_notes(reading, health) + "</div>")
    return WhatIf(body, views, offered)


ORDERS = ("case number", "the model's call", "flagged evidence first", "disagreement with the record first")
"""How a reader can order the case list (static and live); the last one uses the recorded margin,
and says so (choosing it is asking for the truth)."""


def _flagged_count(reading: CaseReading, health: dict) -> int:
    return sum(1 for j in reading.offered if (h := health.get(j)) is not None and h.flagged)


def case_orders(ds, rows: Sequence[int], readings: Sequence[CaseReading], health: dict) -> list[tuple[str, list[int], list[str]]]:
    """For each of :data:`ORDERS`: its name, the positions of ``rows`` in that order (stable: case
    number breaks ties), and the case list's labels in that order (each says its key)."""
    names = [C.case_number(ds, i).capitalize() for i in rows]
    n = range(len(rows))
    call = [r.expl.predicted_class for r in readings]
    flagged = [_flagged_count(r, health) for r in readings]
    agrees = [int(r.expl.predicted_class == int(ds.labels[i])) for r, i in zip(readings, rows)]

    def flags(k):
        return f"⚠ {flagged[k]} flagged in its evidence" if flagged[k] else "no flagged evidence"

    return [
        (ORDERS[0], list(n), names),
        (ORDERS[1], sorted(n, key=lambda k: (call[k], k)),
         [f"{names[k]} · read as {MARGINS[call[k]]}" for k in sorted(n, key=lambda k: (call[k], k))]),
        (ORDERS[2], sorted(n, key=lambda k: (-flagged[k], k)),
         [f"{names[k]} · {flags(k)}" for k in sorted(n, key=lambda k: (-flagged[k], k))]),
        (ORDERS[3], sorted(n, key=lambda k: (agrees[k], k)),
         [f"{names[k]} · {'agrees with' if agrees[k] else 'disagrees with'} the record"
          for k in sorted(n, key=lambda k: (agrees[k], k))]),
    ]


def case_explorer(run, data=None, split: str = "test", mode: str = "auto", top: int = 3,
                  max_cases: int = C.MAX_CASES, cases: Sequence[int | str] | None = None,
                  show_dataset_ids: bool | None = None,
                  title: str = "Case reader: the model's reading of a mass, its evidence, and what if") -> Explorer:
    """Pick a case of ``split`` (or one of ``cases``; the list ordered by case number, the model's call,
    flagged evidence or disagreement with the record, :data:`ORDERS`): read it large, see the model's reading and
    the evidence for and against its call (``top`` prototypes each, at most 6; static, at most 3),
    and dismiss any of those prototypes to see the reading change, next to the image. Static: any
    one or pair; live: any set. ``show_dataset_ids``: see :func:`cases.show_ids`."""
    from .. import explain

    if not 1 <= int(top) <= I.MAX_LAYERS // 2:
        raise InputError(f"top={top}: show between 1 and {I.MAX_LAYERS // 2} prototypes for and against")
    mode = resolve_mode(mode)
    if mode == "static" and 2 * int(top) > MAX_DISMISS:
        raise InputError(f"top={top}: a static page offers a dismiss button for every prototype listed "
                         f"as evidence, at most {MAX_DISMISS} ({MAX_DISMISS // 2} for and {MAX_DISMISS // 2} "
                         "against); a live notebook lists up to 6 each")
    ds = C.dataset(run, data)
    rows = C.pick_cases(ds, split, max_cases, cases=cases)
    health = {h.index: h for h in C.health(run, ds)}
    quality = Q.quality_html(Q.model_quality(run))
    readings: dict[int, CaseReading] = {}

    def reading(k: int) -> CaseReading:
        if k not in readings:
            readings[k] = read_case(run, ds, rows[k], top)
        return readings[k]

    control = dropdown([C.case_number(ds, i).capitalize() for i in rows], width="16em")
    control.add_class("iaiabl-case-picker")
    demo = C.demo_note(run, ds)
    intro = ("Read the region of interest first; the heat-map buttons show where each prototype "
             "matches. Keyboard: Tab moves between the buttons (the image is one: it enlarges), Enter "
             "or Space presses one, Escape shrinks the enlarged image. Points: each prototype adds to (or takes from) the model's score for each "
             "margin; the highest score is the model's call. If a prototype matches the wrong thing "
             "(background, a marker, the image border), dismiss it: the model then reads the case "
             "without it. The recorded margin and pathology stay hidden until you ask. Under the "
             "image, the whole mammogram shows where the region lies (boxed, with a scale bar in "
             "millimetres); under the case's number, a button opens the other view (CC or MLO) of "
             "the same lesion when this list holds it.")
    if mode == "static":
        per_case, whatifs = [], []
        for k in range(len(rows)):
            r = reading(k)
            wi = static_whatif_html(run, r, health)
            per_case.append(html_view(case_html(ds, r, health, show_dataset_ids, wi.html, quality, rows)))
            whatifs.append(wi)
        outer = stack(per_case)
        links = [link(control, "index", outer)]
        # the orders: each its own case list and stack over the same views (a stack draws only the
        # case it shows, so a view is on the page once; its state is embedded once)
        orders = case_orders(ds, rows, [reading(k) for k in range(len(rows))], health)
        boxes = [W.VBox([labelled("Case:", control), outer], layout=W.Layout(width="100%"))]
        for _name, perm, labels in orders[1:]:
            dd = dropdown(labels, width="30em")
            dd.add_class("iaiabl-case-picker")
            st = stack([per_case[k] for k in perm])
            links.append(link(dd, "index", st))
            boxes.append(W.VBox([labelled("Case:", dd), st], layout=W.Layout(width="100%")))
        order_control = dropdown([name for name, *_ in orders], width="22em")
        order_control.add_class("iaiabl-order-picker")
        by_order = stack(boxes)
        links.append(link(order_control, "index", by_order))
        n_views = sum(len(w.views) for w in whatifs)
        kb = sum(len(w.html) for w in whatifs) / 1000
        note = (f"{len(rows)} {split} cases precomputed. What if: for each case, any one and any pair "
                f"of the prototypes listed as its evidence ({n_views} views in all, about {kb:.0f} kB of "
                "this page); a live notebook dismisses any set.")
        ex = Explorer(title, mode, note, {"order": order_control}, by_order, per_case, links, intro=intro,
                      labels={"order": "Order the cases by:"}, demo=demo)
        ex.controls["case"] = control          # the case list in case-number order (the first order)
        ex.view = outer                        # its stack: current_html follows it
        ex.by_order = by_order
        ex.orders = orders
        ex.whatif = whatifs
    else:
        head_w, frame_w, model_w, evidence_w, notes_w = (html_view("") for _ in range(5))
        title_w = html_view(WHATIF_TITLE)
        toggles = W.HBox([], layout=W.Layout(flex_flow="row wrap"))
        result = html_view("")

        def redraw_whatif(_change=None):
            r = reading(int(control.value or 0))
            chosen = [j for j, t in zip(r.offered, toggles.children) if t.value]
            result.value = whatif_html(r, explain.dismissal(run, r.expl, chosen))

        def show_case(_change=None):
            r = reading(int(control.value or 0))
            parts = case_parts(ds, r, health, show_dataset_ids, quality, rows)
            head_w.value, frame_w.value, model_w.value = parts.header, parts.frame, parts.reading
            evidence_w.value = parts.evidence
            notes_w.value = _whatif_notes(r, health)
            ts = [W.Checkbox(value=False, description="dismiss " + _button_text(r.expl, j, health)[0], indent=False,
                             layout=W.Layout(width="auto")) for j in r.offered]
            for t in ts:
                t.observe(redraw_whatif, names="value")
            toggles.children = ts
            redraw_whatif()

        control.observe(show_case, names="value")
        order_control = dropdown(list(ORDERS), width="22em")
        order_control.add_class("iaiabl-order-picker")

        def reorder(_change=None):
            _name, perm, labels = case_orders(ds, rows, [reading(k) for k in range(len(rows))],
                                              health)[int(order_control.index or 0)]
            keep = control.value
            control.options = [(lab, k) for lab, k in zip(labels, perm)]      # resets the choice ...
            control.value = keep                                             # ... so the case is kept

        order_control.observe(reorder, names="index")
        show_case()
        frame_w.layout = W.Layout(flex="0 1 auto", max_width="100%")
        side = W.VBox([model_w, title_w, toggles, result, notes_w], layout=W.Layout(flex="1 1 22em", min_width="18em"))
        view = W.VBox([head_w, W.HBox([frame_w, side], layout=W.Layout(flex_flow="row wrap", align_items="flex-start",
                                                                       width="100%")), evidence_w],
                      layout=W.Layout(width="100%"))
        note = f"{len(rows)} {split} cases; dismiss any set of the prototypes listed as evidence."
        ex = Explorer(title, mode, note, {"order": order_control, "case": control}, view,
                      intro=intro, labels={"order": "Order the cases by:", "case": "Case:"}, demo=demo)
        ex.controls["dismiss"] = toggles       # drawn beside the image, not with the pickers
    ex.rows = rows
    ex.reading = reading
    return ex


def dismiss_reasoning(run, data=None, case: int | str = 0, mode: str = "auto", top: int = 3,
                      **kwargs) -> Explorer:
    """The case reader on one case (an index or dataset id of ``data``): the paper's Fig. 1e."""
    return case_explorer(run, data, mode=mode, top=top, cases=[case],
                         title="Dismiss part of the reasoning", **kwargs)

"""Explorers for clinicians (ipywidgets), with a kernel and without one.

Four explorers, each a function that returns an :class:`Explorer` (an ``ipywidgets.VBox``):

    case_explorer(run, data, split="test")            the case reader: a case large, the model's
                                                      reading, the evidence for and against its call,
                                                      and what if part of it is dismissed (Fig. 3, 1e)
    activation_precision_explorer(run, data)          where the model looks: its most active N % of
                                                      the map against the annotation (Eq. 9, Fig. 6)
    fine_annotation_comparison(run_with, run_without, data)
                                                      the same case under two models (Fig. 4)
    prototype_gallery(run, data)                      each prototype, its source case, its health
                                                      check (distrusted ones first), its nearest cases

(``dismiss_reasoning(run, data, case)`` is the case reader on one case.) ``share_case(a, b, ...)``
gives explorers of the same cases one chosen case: choosing it in one chooses it in the others.

Nothing is computed here that the library computes elsewhere: explanations, dismissals and
prototype health come from :mod:`iaiabl_lib.explain`, activation precision from
:mod:`iaiabl_lib.metrics`, colours from the one similarity scale of :mod:`iaiabl_lib.plots`.

One file per idea:

    mode.py       live or static (``resolve_mode``; the rule for "auto")
    images.py     lossless PNG layers, the reading frame (large view, heat-map buttons, zoom), legend
    words.py      a clinician's words: percentages, margins, evidence for and against
    cases.py      which cases, case numbers instead of patient IDs, ground truth on request
    frame.py      the Explorer box, its style sheet, controls tied to precomputed views
    case.py, precision.py, compare.py, gallery.py    the explorers
    sphinx.py     the book build's Sphinx extension (static mode, scripts once, <noscript>)

Two modes, one API (``mode=`` of every function): see :mod:`iaiabl_lib.widgets.mode`. In static
mode every view is precomputed and linked to its control in the browser (``jslink``/``jsdlink``
on ``Stack.selected_index``), so the built book works with no kernel; each explorer says which
mode the reader is in, and what a static page precomputed.
"""
from __future__ import annotations

from .case import MAX_DISMISS, CaseReading, case_explorer, dismiss_reasoning, read_case, whatif_html
from .cases import MAX_CASES, case_number, pick_cases, relevant, show_ids
from .compare import fine_annotation_comparison
from .frame import Explorer, share_case, style_sheet, visible_html
from .gallery import health_order, prototype_gallery
from .images import READING_PX, colour_legend, png_uri, reading_frame
from .mode import LIVE_LINE, MODES, STATIC_ENV, STATIC_LINE, resolve_mode
from .precision import DEFAULT_PERCENT, MAX_PERCENT, activation_precision_explorer, top_pixels
from .sphinx import setup
from .words import distrust_sentence, malignancy_line, margin_lines, pct

__all__ = [
    "MODES", "STATIC_ENV", "LIVE_LINE", "STATIC_LINE", "MAX_CASES", "MAX_DISMISS", "READING_PX",
    "DEFAULT_PERCENT", "MAX_PERCENT", "style_sheet", "Explorer", "resolve_mode", "case_explorer",
    "dismiss_reasoning", "activation_precision_explorer", "fine_annotation_comparison",
    "prototype_gallery", "dismissed_probabilities", "pick_cases", "case_number", "show_ids",
    "relevant", "read_case", "CaseReading", "whatif_html", "top_pixels", "distrust_sentence",
    "health_order", "colour_legend", "png_uri", "reading_frame", "visible_html", "margin_lines",
    "malignancy_line", "pct", "setup", "share_case",
]


def __getattr__(name: str):
    # explain (torch) is imported on first use: the Sphinx extension imports this package
    if name == "dismissed_probabilities":
        from ..explain import dismissed_probabilities

        return dismissed_probabilities
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

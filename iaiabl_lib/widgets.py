"""Interactive explorers for clinicians (ipywidgets), with a kernel and without one.

Five explorers, each a function that returns an :class:`Explorer` (an ``ipywidgets.VBox``):

    prototype_gallery(run, data)                      each prototype: its patch, its source case with
                                                      the box, its class, its h1 weights, its nearest
                                                      training images
    case_explorer(run, data, split="test")            pick a case: margin and malignancy probabilities,
                                                      the top prototypes with their activation maps
                                                      and points (the paper's Fig. 3)
    dismiss_reasoning(run, data, case)                switch prototypes off (their similarity set to 0)
                                                      and watch the probabilities move (Fig. 1e)
    activation_precision_explorer(run, data)          a τ slider: the top activations against the
                                                      annotated region, with the precision (Fig. 6)
    fine_annotation_comparison(run_with, run_without, data)
                                                      the same case under the models trained with and
                                                      without the fine-annotation loss (Fig. 4)

Nothing is computed here that the library computes elsewhere: explanations come from
:mod:`iaiabl_lib.explain`, figures from :mod:`iaiabl_lib.plots`, activation precision from
:mod:`iaiabl_lib.metrics`; a dismissal goes through the model's own heads,
``model.heads(similarity * keep)`` (h1 then h2).

Two modes, one API (``mode=`` of every function)
------------------------------------------------
``"live"``    one view, redrawn by kernel callbacks (``observe``) when a control moves. Needs a
              running kernel; anything can be combined (e.g. several prototypes dismissed at once).
``"static"``  every view is computed up front (HTML with embedded PNGs) and stacked in an
              ``ipywidgets.Stack``; the control is tied to the stack IN THE BROWSER with
              ``ipywidgets.jslink`` (``Dropdown.index`` ↔ ``Stack.selected_index``; two controls,
              e.g. case × τ, are nested stacks: the case picks the outer stack, the τ slider is
              linked to the selected index of every inner one). The built book keeps working with
              no kernel: the widget state, views included, is embedded in the page and rendered by
              the vendored widget manager (``book/_static/ipywidgets/embed.js``).
              Dismissal offers the precomputed views "one prototype dismissed at a time", and says so.
``"auto"``    (default) the rule, in order:
              1. ``IAIABL_STATIC_WIDGETS`` in the environment: ``1/true/yes/static`` → static,
                 ``0/false/no/live`` → live. The book build sets it (see :func:`setup`, a Sphinx
                 extension listed in ``_config.yml``), so the executed chapter is static.
              2. Inside a Jupyter kernel (a frontend may be listening) → live.
              3. Anywhere else (a script, the test suite, a terminal) → static: there is no comm to
                 call back.
Each explorer shows one line saying which mode the reader is in.

Views are kept small for the book: PNGs of at most ``MAX_PNG_BYTES`` (dpi lowered and the palette
quantised until they fit) and at most ``MAX_CASES`` cases per explorer.
"""
from __future__ import annotations

import base64
import html
import io
import os
from typing import Any, Callable, Sequence

import ipywidgets as W
import numpy as np

from .config import MARGIN_WORDS, MARGINS

__all__ = [
    "MODES", "STATIC_ENV", "MAX_CASES", "MAX_PNG_BYTES", "TAUS", "Explorer", "resolve_mode",
    "prototype_gallery", "case_explorer", "dismiss_reasoning", "activation_precision_explorer",
    "fine_annotation_comparison", "dismissed_probabilities", "pick_cases", "figure_uri",
    "margin_lines", "malignancy_line", "colour_legend", "setup",
]

MODES = ("auto", "live", "static")
STATIC_ENV = "IAIABL_STATIC_WIDGETS"
MAX_CASES = 8
"""At most this many cases per explorer (static views are embedded in the page)."""
MAX_PNG_BYTES = 40_000
"""Each embedded PNG is made to fit in this many bytes."""
GALLERY_PNG_BYTES = 30_000
AP_PNG_BYTES = 18_000
"""Tighter budgets where there are many views (the gallery; cases × τ in the precision explorer)."""
TAUS = (0.5, 0.75, 0.9, 0.95, 0.99)
"""Thresholds τ offered by :func:`activation_precision_explorer` (the paper uses 0.95)."""

LIVE_LINE = "Live: computed by the kernel as you move the controls"
STATIC_LINE = "Static: precomputed views, no kernel needed"

_TRUE = {"1", "true", "yes", "on", "static"}
_FALSE = {"0", "false", "no", "off", "live"}


# ---------------------------------------------------------------------------------------------
# Mode
# ---------------------------------------------------------------------------------------------


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    ip = get_ipython()
    return ip is not None and getattr(ip, "kernel", None) is not None


def resolve_mode(mode: str = "auto") -> str:
    """"live" or "static" for ``mode`` ("auto" follows the rule in the module docstring)."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: choose one of {', '.join(MODES)}")
    if mode != "auto":
        return mode
    env = os.environ.get(STATIC_ENV, "").strip().lower()
    if env in _TRUE:
        return "static"
    if env in _FALSE:
        return "live"
    return "live" if _in_kernel() else "static"


# ---------------------------------------------------------------------------------------------
# The explorer widget
# ---------------------------------------------------------------------------------------------


class Explorer(W.VBox):
    """What every explorer function returns: a VBox (title, mode line, optional intro, labelled
    controls, view; DOM class ``iaiabl-explorer``) with handles for programs and tests.

    mode        "live" or "static"
    mode_line   the HTML widget saying which mode the reader is in
    controls    {name: widget} (e.g. "case", "tau", "prototype", "dismiss")
    view        live: the ``HTML`` widget that callbacks redraw; static: the outer ``Stack``
    views       static: every precomputed view widget (``HTML``), flat, in stack order
    links       static: the ``jslink`` objects tying controls to stacks
    prototypes  (dismiss_reasoning only) the prototype indices offered, in button order
    """

    def __init__(self, title: str, mode: str, note: str, controls: dict[str, W.Widget],
                 view: W.Widget, views: Sequence[W.Widget] = (), links: Sequence[Any] = (),
                 intro: str = "", labels: dict[str, str] | None = None, **kwargs):
        header = W.HTML(f"<div style='font-weight:600;font-size:1.05em'>{html.escape(title)}</div>")
        line = STATIC_LINE if mode == "static" else LIVE_LINE
        colour = "#6a3d9a" if mode == "static" else "#1b7837"
        self.mode_line = W.HTML(
            f"<div class='iaiabl-mode iaiabl-mode-{mode}' style='font-size:0.85em;color:{colour}'>"
            f"<b>{line}.</b> {note}</div>")
        rows = [_labelled((labels or {}).get(name, ""), ctl) for name, ctl in controls.items()]
        intro_w = [W.HTML(f"<div style='margin:2px 0 4px 0'>{intro}</div>")] if intro else []
        super().__init__([header, self.mode_line, *intro_w, *rows, view], **kwargs)
        self.add_class("iaiabl-explorer")
        self.mode = mode
        self.controls = dict(controls)
        self.view = view
        self.views = list(views)
        self.links = list(links)

    def current_html(self) -> str:
        """The HTML of the view the reader sees now (static: following the stacks' selection)."""
        w = self.view
        while isinstance(w, W.Stack):
            w = w.children[w.selected_index or 0]
        if isinstance(w, W.Box):           # a view made of several widgets
            return "".join(c.value for c in w.children if isinstance(c, W.HTML))
        return w.value


def _labelled(label: str, control: W.Widget) -> W.Widget:
    """``control`` with ``label`` in front, as an HTML widget rather than the control's own
    ``description``: the embedded widget manager typesets descriptions with MathJax 2's API
    (``MathJax.Hub.Queue``), which fails on a page that loads MathJax 3 (the book's)."""
    if not label:
        return control
    return W.HBox([W.HTML(f"<b>{html.escape(label)}</b>", layout=W.Layout(margin="0 0.5em 0 0")),
                   control], layout=W.Layout(align_items="center"))


def _stack(children: Sequence[W.Widget]) -> W.Stack:
    return W.Stack(list(children), selected_index=0, layout=W.Layout(width="100%"))


def _html(value: str) -> W.HTML:
    return W.HTML(value, layout=W.Layout(width="100%"))


def _one_control_views(mode: str, control: W.Widget, render: Callable[[int], str], n: int,
                       trait: str = "index"):
    """(view, views, links) for ``n`` views chosen by ``control.<trait>`` (an index)."""
    if mode == "static":
        views = [_html(render(i)) for i in range(n)]
        stack = _stack(views)
        return stack, views, [W.jslink((control, trait), (stack, "selected_index"))]
    view = _html(render(int(getattr(control, trait) or 0)))

    def redraw(change):
        view.value = render(int(change["new"] or 0))

    control.observe(redraw, names=trait)
    return view, [], []


def _dropdown(labels: Sequence[str], width: str = "30em") -> W.Dropdown:
    return W.Dropdown(options=[(lab, i) for i, lab in enumerate(labels)], value=0,
                      layout=W.Layout(width=width))


# ---------------------------------------------------------------------------------------------
# HTML pieces: figures, probabilities, colour legends
# ---------------------------------------------------------------------------------------------


def _figure_rgb(fig, dpi: int) -> np.ndarray:
    """Render ``fig`` at ``dpi`` with a tight bounding box (nothing clipped): (H, W, 3) uint8."""
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.04, facecolor="white",
                pil_kwargs={"compress_level": 1})
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def _png(rgb: np.ndarray, scale: float, colours: int | None) -> bytes:
    from PIL import Image

    img = Image.fromarray(rgb)
    if scale != 1:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.Resampling.LANCZOS)
    if colours:
        img = img.quantize(colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


_PNG_TRIES = ((1.0, None), (1.0, 128), (1.0, 64), (1.0, 48), (1.0, 32), (0.85, 48), (0.85, 32),
              (0.72, 32), (0.6, 32), (0.5, 24))
"""(scale, palette colours) tried in turn: legible text first (full scale), colours second."""


def _small_png(fig, max_bytes: int = MAX_PNG_BYTES, dpi: int = 72) -> bytes:
    """A matplotlib Figure as PNG bytes of at most ``max_bytes`` (drawn once at ``dpi``, white
    margins cropped; then a 128/64-colour palette and smaller scales until it fits; the smallest
    try otherwise)."""
    rgb = _figure_rgb(fig, dpi)
    best = b""
    for scale, colours in _PNG_TRIES:
        png = _png(rgb, scale, colours)
        if not best or len(png) < len(best):
            best = png
        if len(png) <= max_bytes:
            return png
    return best


def figure_uri(fig, max_bytes: int = MAX_PNG_BYTES, dpi: int = 72) -> str:
    """A small PNG (:func:`_small_png`) as a ``data:image/png;base64,…`` URI (for an ``<img>`` in a view)."""
    return "data:image/png;base64," + base64.b64encode(_small_png(fig, max_bytes, dpi)).decode("ascii")


def _img(uri: str, alt: str, width: str = "100%") -> str:
    return (f"<img src='{uri}' alt='{html.escape(alt, quote=True)}' "
            f"style='max-width:{width};height:auto;display:block;margin:4px 0'>")


def array_uri(image: np.ndarray, scale: int = 3) -> str:
    """A grey uint8 image (H, W) as a PNG data URI, enlarged ``scale``× with square pixels."""
    from PIL import Image

    a = np.asarray(image)
    if a.dtype != np.uint8:
        a = np.clip(a * (255 if a.max() <= 1 else 1), 0, 255).astype(np.uint8)
    img = Image.fromarray(a).resize((max(1, a.shape[1] * scale), max(1, a.shape[0] * scale)),
                                    Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _pct(p: float) -> str:
    p = 100 * float(p)
    return "below 1 %" if 0 < p < 1 else ("above 99 %" if 99 < p < 100 else f"{p:.0f} %")


def _bar(p: float, colour: str) -> str:
    w = max(0.0, min(100.0, 100 * float(p)))
    return (f"<span style='display:inline-block;width:9em;height:0.8em;background:#eee;"
            f"vertical-align:middle;margin-right:0.5em'><span style='display:block;height:100%;"
            f"width:{w:.1f}%;background:{colour}'></span></span>")


def _class_colour(c: int) -> str:
    from .plots import CLASS_COLOURS

    return CLASS_COLOURS[MARGINS[c]]


def margin_lines(prob: Sequence[float], predicted: int | None = None) -> str:
    """One line per margin: "62 % — the model's estimated probability that this margin is
    spiculated (lines radiating from the edge)", the predicted one in bold."""
    rows = []
    for c, p in enumerate(prob):
        text = (f"<b>{_pct(p)}</b> — the model's estimated probability that this margin is "
                f"{html.escape(MARGIN_WORDS[MARGINS[c]])}")
        if c == predicted:
            text = f"<span style='background:#fff3bf'>{text} <i>(the model's call)</i></span>"
        rows.append(f"<div class='iaiabl-prob iaiabl-margin-{MARGINS[c]}'>"
                    f"{_bar(p, _class_colour(c))}{text}</div>")
    return "".join(rows)


def malignancy_line(p: float | None) -> str:
    if p is None:
        return ("<div class='iaiabl-prob iaiabl-malignancy'><i>No malignancy model (h2) was fitted "
                "for this run.</i></div>")
    return (f"<div class='iaiabl-prob iaiabl-malignancy'>{_bar(p, '#b2182b')}<b>{_pct(p)}</b> — the "
            "model's estimated probability that this mass is malignant (from the three margin scores "
            "alone, the paper's Eq. 10)</div>")


def colour_legend(low: str = "low", high: str = "high", what: str = "similarity to the prototype") -> str:
    """An HTML colour bar of the activation colour map (``plots.ACTIVATION_CMAP``)."""
    import matplotlib

    from .plots import ACTIVATION_CMAP

    cmap = matplotlib.colormaps[ACTIVATION_CMAP]
    stops = ", ".join(matplotlib.colors.to_hex(cmap(x)) for x in np.linspace(0, 1, 9))
    return (f"<div class='iaiabl-legend' style='font-size:0.85em;margin:2px 0'>Colour: "
            f"{html.escape(what)} — {html.escape(low)} "
            f"<span style='display:inline-block;width:12em;height:0.8em;vertical-align:middle;"
            f"background:linear-gradient(to right, {stops})'></span> {html.escape(high)}</div>")


def _case_header(ds, i: int) -> str:
    truth = (f"recorded margin: {html.escape(MARGINS[int(ds.labels[i])])}, pathology: "
             f"{'malignant' if int(ds.malignant[i]) else 'benign'}")
    return (f"<div class='iaiabl-case' data-case='{html.escape(ds.ids[i], quote=True)}' "
            f"style='margin:4px 0'><b>Case {html.escape(ds.ids[i])}</b> ({truth})</div>")


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def _dataset(run, data):
    """The prepared dataset at the run's image size (``explain.dataset_for``)."""
    from . import explain

    return explain.dataset_for(run, data)


def pick_cases(ds, split: str | None = "test", max_cases: int = MAX_CASES,
               prefer_fine: bool = False, cases: Sequence[int | str] | None = None) -> list[int]:
    """Row indices of up to ``max_cases`` cases of ``split``, taking the margin classes in turn
    (so every class is shown); ``prefer_fine``: only cases with a fine annotation when there are
    any. ``cases``: explicit indices or ids instead."""
    if cases is not None:
        out = [ds.ids.index(c) if isinstance(c, str) else int(c) for c in cases]
        return out[:max_cases]
    rows = np.arange(len(ds)) if split is None else np.flatnonzero(ds.split == split)
    if len(rows) == 0:
        raise ValueError(f"no cases in split {split!r}")
    if prefer_fine and ds.has_fine[rows].any():
        rows = rows[ds.has_fine[rows]]
    by_class = [list(rows[ds.labels[rows] == c]) for c in range(len(MARGINS))]
    out: list[int] = []
    while len(out) < max_cases and any(by_class):
        for group in by_class:
            if group and len(out) < max_cases:
                out.append(int(group.pop(0)))
    return out


def _case_label(ds, i: int) -> str:
    return f"{ds.ids[i]} · recorded: {MARGINS[int(ds.labels[i])]}"


def _relevant(ds, i: int) -> tuple[np.ndarray, str]:
    """The annotated region of case i: its fine annotation when it has one, else the lesion."""
    if bool(ds.has_fine[i]) and ds.fine_masks[i].any():
        return ds.fine_masks[i], "the fine annotation of the margin-relevant region"
    return ds.lesion_masks[i], "the lesion outline (this case has no fine annotation)"


# ---------------------------------------------------------------------------------------------
# 1. Prototype gallery
# ---------------------------------------------------------------------------------------------


def _weights_html(weights: np.ndarray, j: int, own: int) -> str:
    rows = []
    for c in range(weights.shape[0]):
        w = float(weights[c, j])
        effect = "adds to" if w >= 0 else "takes away from"
        rows.append(f"<li>{w:+.2f} — each unit of similarity {effect} the evidence for "
                    f"<b>{html.escape(MARGINS[c])}</b>{' (its own class)' if c == own else ''}</li>")
    return ("<div style='margin:4px 0'>Its weights in the margin layer h1 (points per unit of "
            f"similarity):<ul style='margin:2px 0'>{''.join(rows)}</ul></div>")


def prototype_gallery(run, data=None, n_nearest: int = 3, mode: str = "auto",
                      split: str = "train", prototypes: Sequence[int] | None = None) -> Explorer:
    """Pick a prototype: its patch, its source training case with the box, its class, its h1
    weights, and its ``n_nearest`` nearest training images of ``split``
    (``explain.prototype_gallery``). ``prototypes``: a subset (default: all)."""
    from . import explain, plots

    mode = resolve_mode(mode)
    entries = explain.prototype_gallery(run, _dataset(run, data), n_nearest=n_nearest, split=split,
                                        prototypes=prototypes)
    weights = run.model.margin_head.weight.detach().float().cpu().numpy()
    labels = [f"prototype {e.index} · {e.class_name}" + (f" · from {e.source_id}" if e.source_id else "")
              for e in entries]
    control = _dropdown(labels)

    def render(k: int) -> str:
        e = entries[k]
        patch = ""
        if e.source_image is not None and e.box is not None:
            y0, x0, y1, x1 = e.box
            crop = e.source_image[y0:y1, x0:x1]
            if crop.size:
                patch = (f"<div style='display:inline-block;vertical-align:top;margin-right:1em'>"
                         f"<div>the prototype (the boxed patch):</div>"
                         f"<img src='{array_uri(crop, scale=max(1, 96 // max(crop.shape)))}' "
                         f"alt='prototype {e.index} patch' style='image-rendering:pixelated'></div>")
        fig = plots.plot_prototype_gallery([e])
        head = (f"<div class='iaiabl-prototype' data-prototype='{e.index}'><b>Prototype {e.index}</b>: "
                f"a {html.escape(MARGIN_WORDS[e.class_name])} prototype, a patch of training case "
                f"{html.escape(str(e.source_id or 'unknown'))}.</div>")
        return (head + patch + _weights_html(weights, e.index, e.cls)
                + _img(figure_uri(fig, GALLERY_PNG_BYTES), f"prototype {e.index} and its nearest training images")
                + colour_legend(what="similarity of each part of a training image to the prototype")
                + "<div style='font-size:0.85em'>Left: the source case with the prototype boxed; then "
                  "its nearest training images (smallest distance d² to the prototype), the closest "
                  "patch boxed.</div>")

    view, views, links = _one_control_views(mode, control, render, len(entries))
    note = (f"All {len(entries)} prototypes are precomputed." if mode == "static" else "")
    return Explorer("Prototype gallery: what each prototype is", mode, note, {"prototype": control},
                    view, views, links, labels={"prototype": "Prototype:"})


# ---------------------------------------------------------------------------------------------
# 2. Case explorer
# ---------------------------------------------------------------------------------------------


def _evidence_table(expl) -> str:
    rows = []
    for p in expl.prototypes:
        sign = "for" if p.contribution >= 0 else "against"
        rows.append(
            f"<tr><td>prototype {p.index}</td><td>{html.escape(p.class_name)}</td>"
            f"<td style='text-align:right'>{p.similarity:.2f}</td>"
            f"<td style='text-align:right'>{p.weight:+.2f}</td>"
            f"<td style='text-align:right'><b>{abs(p.contribution):.2f}</b> points {sign} "
            f"{html.escape(expl.explained_margin)}</td></tr>")
    return ("<table class='iaiabl-evidence' style='font-size:0.9em;border-collapse:collapse'>"
            "<tr><th>prototype</th><th>its class</th><th>similarity</th><th>weight</th>"
            "<th>similarity × weight</th></tr>" + "".join(rows) + "</table>")


def _case_view(run, ds, i: int, top: int) -> str:
    from . import explain, plots

    expl = explain.explain_case(run, i, data=ds, top=top)
    fig = plots.plot_case_explanation(expl)
    return (_case_header(ds, i)
            + margin_lines(expl.margin_prob, expl.predicted_class)
            + malignancy_line(expl.malignancy_prob)
            + f"<div style='margin-top:6px'>Why: the {len(expl.prototypes)} prototypes that add the most "
              f"evidence for <b>{html.escape(expl.explained_margin)}</b></div>"
            + _evidence_table(expl)
            + _img(figure_uri(fig), f"reasoning for case {ds.ids[i]}")
            + colour_legend(what="similarity of each part of the case to the prototype")
            + f"<div class='iaiabl-text' style='font-size:0.9em'>{html.escape(explain.case_text(expl))}</div>")


def case_explorer(run, data=None, split: str = "test", mode: str = "auto", top: int = 3,
                  max_cases: int = MAX_CASES, cases: Sequence[int | str] | None = None) -> Explorer:
    """Pick a case of ``split``: the margin probabilities, the malignancy probability and the top
    prototypes with their activation maps and points (the paper's Fig. 3 layout)."""
    mode = resolve_mode(mode)
    ds = _dataset(run, data)
    rows = pick_cases(ds, split, max_cases, cases=cases)
    control = _dropdown([_case_label(ds, i) for i in rows])
    cache: dict[int, str] = {}

    def render(k: int) -> str:
        if k not in cache:
            cache[k] = _case_view(run, ds, rows[k], top)
        return cache[k]

    view, views, links = _one_control_views(mode, control, render, len(rows))
    note = (f"{len(rows)} {split} cases precomputed." if mode == "static" else
            f"{len(rows)} {split} cases.")
    return Explorer("Case explorer: what the model says about a mass, and why", mode, note,
                    {"case": control}, view, views, links, labels={"case": "Case:"})


# ---------------------------------------------------------------------------------------------
# 3. Dismissing part of the reasoning (Fig. 1e)
# ---------------------------------------------------------------------------------------------


def dismissed_probabilities(run, similarity, keep) -> dict[str, Any]:
    """Margin and malignancy probabilities with some prototypes dismissed: their similarity is set
    to 0 and the model's own heads recompute the scores, ``model.heads(similarity * keep)``.

    similarity (m,), keep (m,) 0/1 (or bool). Returns {"margin_logits" (3,), "margin_prob" (3,),
    "malignancy_prob" (float, or None when the run has no fitted h2)}."""
    import torch

    model = run.model
    dev = model.prototypes.device
    s = torch.as_tensor(np.asarray(similarity, dtype=np.float32), device=dev)[None]
    k = torch.as_tensor(np.asarray(keep, dtype=np.float32), device=dev)[None]
    with torch.no_grad():
        logits, mal = model.heads(s * k)
    fitted = bool(getattr(run, "malignancy", None))
    return {"margin_logits": logits[0].float().cpu().numpy(),
            "margin_prob": torch.softmax(logits[0].float(), 0).cpu().numpy(),
            "malignancy_prob": float(torch.sigmoid(mal[0].float()).item()) if fitted else None}


def _dismiss_view(expl, after: dict, dismissed: Sequence[int]) -> str:
    before_p, after_p = expl.margin_prob, after["margin_prob"]
    rows = []
    for c in range(len(MARGINS)):
        d = 100 * (after_p[c] - before_p[c])
        rows.append(
            f"<tr class='iaiabl-dismiss-{MARGINS[c]}'><td>{html.escape(MARGIN_WORDS[MARGINS[c]])}</td>"
            f"<td style='text-align:right'><span class='iaiabl-before'>{_pct(before_p[c])}</span></td>"
            f"<td style='text-align:right'>{_bar(after_p[c], _class_colour(c))}"
            f"<b class='iaiabl-after'>{_pct(after_p[c])}</b></td>"
            f"<td style='text-align:right'>{d:+.0f} percentage points</td></tr>")
    if expl.malignancy_prob is not None and after["malignancy_prob"] is not None:
        d = 100 * (after["malignancy_prob"] - expl.malignancy_prob)
        rows.append(
            "<tr class='iaiabl-dismiss-malignancy'><td>malignant (from the margin scores, Eq. 10)</td>"
            f"<td style='text-align:right'><span class='iaiabl-before'>{_pct(expl.malignancy_prob)}</span></td>"
            f"<td style='text-align:right'>{_bar(after['malignancy_prob'], '#b2182b')}"
            f"<b class='iaiabl-after'>{_pct(after['malignancy_prob'])}</b></td>"
            f"<td style='text-align:right'>{d:+.0f} percentage points</td></tr>")
    new_call = int(np.argmax(after_p))
    if dismissed:
        names = ", ".join(f"prototype {j}" for j in dismissed)
        what = f"Dismissed: {names}. "
        call = (f"The model's call {'stays' if new_call == expl.predicted_class else 'changes to'} "
                f"<b>{html.escape(MARGINS[new_call])}</b>.")
    else:
        what = "Nothing dismissed: the model's own reading. "
        call = f"The model's call: <b>{html.escape(MARGINS[new_call])}</b>."
    return (f"<div class='iaiabl-dismissed' data-dismissed='{','.join(map(str, dismissed))}'>"
            f"{what}{call}</div>"
            "<table class='iaiabl-dismiss-table' style='font-size:0.9em;border-collapse:collapse'>"
            "<tr><th>estimated probability that the margin is …</th><th>as read</th>"
            "<th>after dismissal</th><th>change</th></tr>" + "".join(rows) + "</table>")


def dismiss_reasoning(run, data=None, case: int | str = 0, mode: str = "auto", top: int = 3) -> Explorer:
    """The paper's Fig. 1e: a radiologist who finds a piece of the reasoning wrong dismisses it.
    Toggle prototypes off: their similarity is set to 0, the margin scores and the malignancy
    probability are recomputed by the model's heads (:func:`dismissed_probabilities`).

    live: one toggle per prototype, any combination; static: one prototype dismissed at a time
    (``top`` + 1 precomputed views, the UI says so). ``case``: an index or id of ``data``."""
    from . import explain, plots

    mode = resolve_mode(mode)
    ds = _dataset(run, data)
    i = ds.ids.index(case) if isinstance(case, str) else int(case)
    expl = explain.explain_case(run, i, data=ds, top=top)
    protos = [p.index for p in expl.prototypes]
    m = len(expl.similarity)
    fig = plots.plot_case_explanation(expl)
    intro = (_case_header(ds, i) + _img(figure_uri(fig), f"reasoning for case {ds.ids[i]}")
             + colour_legend(what="similarity of each part of the case to the prototype")
             + "Does a prototype match the wrong thing (background, a marker, the image border)? "
               "Dismiss it: the model then decides without it.")

    def render(dismissed: Sequence[int]) -> str:
        keep = np.ones(m, dtype=np.float32)
        keep[list(dismissed)] = 0
        return _dismiss_view(expl, dismissed_probabilities(run, expl.similarity, keep), dismissed)

    if mode == "static":
        options = [("keep all", 0)] + [(f"dismiss prototype {j} ({MARGINS[int(expl.prototype_class[j])]})", k + 1)
                                       for k, j in enumerate(protos)]
        control = W.ToggleButtons(options=options, value=0, style={"button_width": "auto"})
        views = [_html(render([]))] + [_html(render([j])) for j in protos]
        stack = _stack(views)
        links = [W.jslink((control, "index"), (stack, "selected_index"))]
        note = (f"Precomputed: the model's reading and each of the top {len(protos)} prototypes "
                "dismissed one at a time (in a live notebook you can dismiss several at once).")
        ex = Explorer("Dismiss part of the reasoning", mode, note, {"dismiss": control}, stack,
                      views, links, intro=intro)
        ex.prototypes = protos
        return ex

    toggles = [W.ToggleButton(value=False, description=f"dismiss prototype {j} ({MARGINS[int(expl.prototype_class[j])]})",
                              layout=W.Layout(width="auto")) for j in protos]
    view = _html(render([]))

    def redraw(_change=None):
        view.value = render([j for j, t in zip(protos, toggles) if t.value])

    for t in toggles:
        t.observe(redraw, names="value")
    box = W.HBox(toggles, layout=W.Layout(flex_flow="row wrap"))
    ex = Explorer("Dismiss part of the reasoning", mode, "Toggle any combination of prototypes.",
                  {"dismiss": box}, view, intro=intro)
    ex.prototypes = protos
    return ex


# ---------------------------------------------------------------------------------------------
# 4. Activation precision (Fig. 6, Eq. 9)
# ---------------------------------------------------------------------------------------------


def _ap_view(run, ds, i: int, expl, tau: float) -> str:
    from . import metrics, plots

    p = expl.prototypes[0]
    mask, what = _relevant(ds, i)
    ap = float(metrics.activation_precision(p.activation, mask, tau))
    fig = plots.plot_activation_precision(p.activation, mask, tau=tau, image=expl.image)
    return (_case_header(ds, i)
            + f"<div class='iaiabl-ap' data-tau='{tau}' data-ap='{ap:.4f}'>τ = {tau:g}: the top "
              f"{100 * (1 - tau):.0f} % most activated pixels of prototype {p.index} "
              f"({html.escape(p.class_name)}, the prototype adding the most evidence for the model's call "
              f"{html.escape(expl.predicted_margin)}). <b>Activation precision {ap:.2f}</b>: "
              f"{_pct(ap)} of them lie inside {html.escape(what)}.</div>"
            + _img(figure_uri(fig, AP_PNG_BYTES), f"activation precision of case {ds.ids[i]} at tau {tau}")
            + "<div style='font-size:0.85em'>Right: the annotated region in green, the top pixels in red "
              "(outside) and yellow (inside). A high precision means the model looks where the "
              "radiologist annotated.</div>")


def activation_precision_explorer(run, data=None, split: str = "test", taus: Sequence[float] = TAUS,
                                  mode: str = "auto", max_cases: int = 6,
                                  cases: Sequence[int | str] | None = None) -> Explorer:
    """A case picker and a τ slider: the top (1 − τ) activations of the case's leading prototype
    against the annotated region, with the activation precision (Eq. 9, ``metrics``), paper Fig. 6.
    Static: nested stacks (case → τ), the slider linked to every inner stack."""
    from . import explain

    mode = resolve_mode(mode)
    ds = _dataset(run, data)
    rows = pick_cases(ds, split, max_cases, prefer_fine=True, cases=cases)
    taus = [float(t) for t in taus]
    case_ctl = _dropdown([_case_label(ds, i) for i in rows])
    default = taus.index(0.95) if 0.95 in taus else len(taus) // 2
    tau_ctl = W.SelectionSlider(options=[(f"{t:g}", t) for t in taus], value=taus[default],
                                continuous_update=False, layout=W.Layout(width="24em"))
    expls: dict[int, Any] = {}

    def expl_of(k: int):
        if k not in expls:
            expls[k] = explain.explain_case(run, rows[k], data=ds, top=1)
        return expls[k]

    def render(k: int, t: int) -> str:
        return _ap_view(run, ds, rows[k], expl_of(k), taus[t])

    controls = {"case": case_ctl, "tau": tau_ctl}
    labels = {"case": "Case:", "tau": "τ (threshold):"}
    if mode == "static":
        inner, views, links = [], [], []
        for k in range(len(rows)):
            vs = [_html(render(k, t)) for t in range(len(taus))]
            st = _stack(vs)
            st.selected_index = default
            views += vs
            inner.append(st)
            links.append(W.jslink((tau_ctl, "index"), (st, "selected_index")))
        outer = _stack(inner)
        links.insert(0, W.jslink((case_ctl, "index"), (outer, "selected_index")))
        note = f"{len(rows)} cases × {len(taus)} thresholds precomputed."
        return Explorer("Activation precision: does the model look where the radiologist annotated?",
                        mode, note, controls, outer, views, links, labels=labels)
    view = _html(render(0, default))

    def redraw(_change=None):
        view.value = render(int(case_ctl.index or 0), int(tau_ctl.index or 0))

    case_ctl.observe(redraw, names="index")
    tau_ctl.observe(redraw, names="index")
    return Explorer("Activation precision: does the model look where the radiologist annotated?",
                    mode, f"{len(rows)} cases; any τ of the slider.", controls, view, labels=labels)


# ---------------------------------------------------------------------------------------------
# 5. With and without the fine-annotation loss (Fig. 4)
# ---------------------------------------------------------------------------------------------


def _fine_view(run_with, run_without, ds, i: int, tau: float, names: tuple[str, str]) -> str:
    from . import explain, plots

    mask, what = _relevant(ds, i)
    fig = plots.plot_fine_vs_nofine(run_with, run_without, ds.images[i:i + 1], mask[None], tau=tau,
                                    names=names)
    cols = []
    for run, name in zip((run_with, run_without), names):
        expl = explain.explain_case(run, i, data=ds, top=1)
        cols.append(f"<div style='flex:1;min-width:18em'><b>{html.escape(name)}</b>"
                    + margin_lines(expl.margin_prob, expl.predicted_class)
                    + malignancy_line(expl.malignancy_prob) + "</div>")
    return (_case_header(ds, i)
            + "<div style='display:flex;gap:1em;flex-wrap:wrap'>" + "".join(cols) + "</div>"
            + _img(figure_uri(fig), f"case {ds.ids[i]} with and without the fine-annotation loss")
            + f"<div style='font-size:0.85em'>Green contour: {html.escape(what)}. Each map is the "
              "activation of the most activated prototype of the predicted margin, AP its activation "
              f"precision at τ = {tau:g}.</div>")


def fine_annotation_comparison(run_with, run_without, data=None, split: str = "test",
                               mode: str = "auto", tau: float = 0.95, max_cases: int = MAX_CASES,
                               cases: Sequence[int | str] | None = None,
                               names: tuple[str, str] = ("with the fine-annotation loss",
                                                         "without the fine-annotation loss")) -> Explorer:
    """Pick a case: the same case under the model trained with the fine-annotation loss and the one
    trained without (paper Fig. 4): probabilities side by side, activation maps with their
    activation precision."""
    mode = resolve_mode(mode)
    ds = _dataset(run_with, data)
    rows = pick_cases(ds, split, max_cases, prefer_fine=True, cases=cases)
    control = _dropdown([_case_label(ds, i) for i in rows])
    cache: dict[int, str] = {}

    def render(k: int) -> str:
        if k not in cache:
            cache[k] = _fine_view(run_with, run_without, ds, rows[k], tau, names)
        return cache[k]

    view, views, links = _one_control_views(mode, control, render, len(rows))
    note = f"{len(rows)} cases precomputed." if mode == "static" else f"{len(rows)} cases."
    return Explorer("With and without the fine-annotation loss", mode, note, {"case": control},
                    view, views, links, labels={"case": "Case:"})


# ---------------------------------------------------------------------------------------------
# Sphinx extension: the book build renders static widgets
# ---------------------------------------------------------------------------------------------


def _set_static_env(app, config) -> None:
    mode = str(getattr(config, "iaiabl_widgets_mode", "static")).lower()
    if mode not in ("static", "live", "auto"):
        raise ValueError(f"iaiabl_widgets_mode={mode!r}: use static, live or auto")
    if mode != "auto":
        # the environment wins, so `IAIABL_STATIC_WIDGETS=0 jupyter-book build .` can still test live
        os.environ.setdefault(STATIC_ENV, "1" if mode == "static" else "0")


def setup(app) -> dict:
    """Sphinx extension (``sphinx: extra_extensions: [iaiabl_lib.widgets]`` in ``_config.yml``).

    Sets ``IAIABL_STATIC_WIDGETS=1`` in the build process before the notebooks are executed (their
    kernels inherit it), so every explorer of the book is static and works without a kernel.
    Config value ``iaiabl_widgets_mode``: "static" (default), "live", or "auto" (leave the
    environment alone)."""
    app.add_config_value("iaiabl_widgets_mode", "static", "env")
    app.connect("config-inited", _set_static_env)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

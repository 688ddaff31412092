"""The frame every explorer shares: the :class:`Explorer` box (title, the note on what model and
data the reader sees, the mode line, controls, view), the explorers' style sheet, and the small
widget helpers (labelled controls, stacks, links) that tie a control to precomputed views."""
from __future__ import annotations

import functools
import html
from typing import Any, Sequence

import ipywidgets as W

from ..errors import InputError
from .mode import LIVE_LINE, STATIC_LINE

__all__ = ["MAX_DISMISS", "style_sheet", "Explorer", "labelled", "stack", "html_view", "dropdown", "link", "visible_html",
           "share_case"]

MAX_DISMISS = 6
"""A static case reader has a dismiss button for each prototype of its evidence rows, at most this
many (3 for the call and 3 against): 1 + n + n (n - 1) / 2 precomputed views per case (22 for 6),
chosen by two rows of n + 1 buttons (the style sheet has the rules for that many; the case reader,
:mod:`.case`, uses them)."""


def _layer_rules(n: int) -> str:
    rules = []
    for k in range(1, n + 1):
        rules.append(f".iaiabl-reader>input.iaiabl-pick-{k}:checked~.iaiabl-frame>.iaiabl-layer-{k}"
                     f"{{display:block}}")
        rules.append(f".iaiabl-reader>input.iaiabl-show-{k}:checked~.iaiabl-frame>.iaiabl-extra-{k}"
                     f"{{display:block}}")
        rules.append(f".iaiabl-reader>input.iaiabl-pick-{k}:checked~.iaiabl-legends>.iaiabl-legend-{k}"
                     f"{{display:block}}")
    for k in range(0, n + 1):
        rules.append(f".iaiabl-reader>input.iaiabl-pick-{k}:checked~.iaiabl-picks>label.iaiabl-pick-{k},"
                     f".iaiabl-reader>input.iaiabl-show-{k}:checked~.iaiabl-picks>label.iaiabl-show-{k}"
                     "{background:#2b6cb0;color:#fff;border-color:#2b6cb0}")
    return "\n".join(rules)


def _whatif_rules(n: int) -> str:
    """The what-if views of a case (static): the first choice ``a`` and the second ``b`` (0:
    nothing, k: the k-th prototype offered) show the view of the set {a, b}; the pressed buttons
    are drawn pressed."""
    box = ".iaiabl-whatif-box>input"
    rules = []
    for a in range(n + 1):
        for b in range(n + 1):
            lo, hi = (0, a) if a == b else (min(a, b), max(a, b))
            rules.append(f"{box}.iaiabl-first-{a}:checked~input.iaiabl-second-{b}:checked~.iaiabl-wi-views>"
                         f".iaiabl-wi-{lo}-{hi}{{display:block}}")
    for k in range(n + 1):
        rules.append(f"{box}.iaiabl-first-{k}:checked~.iaiabl-picks>label.iaiabl-first-{k},"
                     f"{box}.iaiabl-second-{k}:checked~.iaiabl-picks>label.iaiabl-second-{k}"
                     "{background:#2b6cb0;color:#fff;border-color:#2b6cb0}")
    return "\n".join(rules)


@functools.cache
def style_sheet() -> str:
    """The explorers' CSS (layers, frames, zoom, legends, tables), sent once with every explorer.
    Heat-map layers are drawn as they are encoded: opaque where coloured, transparent elsewhere
    (``plots.heat_rgba``), so their colours over the image are their legend's."""
    from .images import MAX_LAYERS

    return f"""<style>
.iaiabl-explorer .iaiabl-view{{line-height:1.45;white-space:normal}}
.iaiabl-mode{{line-height:1.4;margin:2px 0}}
.iaiabl-note{{font-size:.85em;background:#fff8e1;border-left:3px solid #e0a000;padding:2px 8px;margin:3px 0;line-height:1.4}}
.iaiabl-details{{font-size:.8em;color:#555}}
.iaiabl-truth{{margin:3px 0;font-size:.9em}}
.iaiabl-truth>summary{{cursor:pointer;color:#2b6cb0}}
.iaiabl-reader{{margin:6px 0}}
.iaiabl-reader>input,.iaiabl-whatif-box>input{{display:none}}
.iaiabl-explorer label[role=button]:focus-visible{{outline:3px solid #e0a000;outline-offset:2px}}
.iaiabl-wi-views>.iaiabl-wi{{display:none}}
.iaiabl-read-row{{display:flex;flex-wrap:wrap;gap:4px 18px;align-items:flex-start}}
.iaiabl-read-image{{flex:0 1 auto;max-width:100%;display:flex;flex-wrap:wrap;gap:0 12px;align-items:flex-start}}
.iaiabl-read-side{{flex:1 1 24em;min-width:18em}}
.iaiabl-whatif-title{{margin-top:8px}}
.iaiabl-quality{{font-size:.85em;background:#eef4fb;border-left:3px solid #2b6cb0;padding:2px 8px;margin:0 0 6px;line-height:1.4}}
.iaiabl-picks label[data-flagged='1']{{border-color:#9c2a00;color:#9c2a00;font-weight:600}}
.iaiabl-read-side .iaiabl-bar{{width:6em}}
.iaiabl-picks label{{display:inline-block;border:1px solid #aaa;border-radius:3px;padding:0 7px;margin:2px 3px 2px 0;cursor:pointer;font-size:.85em;user-select:none;line-height:1.6}}
.iaiabl-frame{{display:block;position:relative;width:var(--px);max-width:100%;aspect-ratio:1/1;background:#000;margin:4px 0;cursor:zoom-in;overflow:hidden}}
.iaiabl-frame>img{{position:absolute;left:0;top:0;width:100%;height:100%;max-width:none;display:block;margin:0}}
.iaiabl-frame>img.iaiabl-heat,.iaiabl-frame>img.iaiabl-marks{{display:none}}
.iaiabl-marks{{image-rendering:pixelated}}
.iaiabl-reader>input.iaiabl-zoom:checked~.iaiabl-frame{{position:fixed;z-index:10000;left:50%;top:50%;transform:translate(-50%,-50%);width:min(94vw,94vh);max-width:none;box-shadow:0 0 0 100vmax rgba(0,0,0,.8);cursor:zoom-out;overflow:visible}}
.iaiabl-reader>input.iaiabl-zoom:checked~.iaiabl-frame::after{{content:'Click the image or press Escape to shrink it';position:absolute;left:0;bottom:100%;margin-bottom:2px;color:#fff;font-size:.9em}}
{_whatif_rules(MAX_DISMISS)}
{_layer_rules(MAX_LAYERS)}
.iaiabl-caption{{font-size:.85em;color:#444}}
.iaiabl-legend{{font-size:.85em;margin:3px 0}}
.iaiabl-layer-legend{{display:none}}
.iaiabl-legend-ramp{{display:inline-block;vertical-align:middle;width:14em}}
.iaiabl-legend-bar{{display:block;width:100%;height:.9em;border:1px solid #888}}
.iaiabl-legend-ticks{{display:flex;justify-content:space-between;font-size:.9em;line-height:1.2}}
.iaiabl-legend-none{{display:inline-block;width:1.6em;height:.9em;vertical-align:middle;border:1px solid #888;background:linear-gradient(to right,#111,#bbb)}}
.iaiabl-bar{{display:inline-block;width:9em;height:.8em;background:#eee;vertical-align:middle;margin-right:.5em}}
.iaiabl-bar>span{{display:block;height:100%}}
.iaiabl-call{{background:#fff3bf}}
.iaiabl-row{{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start;margin:6px 0;padding:6px 0;border-top:1px solid #ddd}}
.iaiabl-row .iaiabl-text{{flex:1 1 18em;min-width:16em}}
.iaiabl-flag{{color:#9c2a00;font-weight:600}}
.iaiabl-patch,.iaiabl-thumb{{display:inline-block;margin:0 8px 0 0;vertical-align:top}}
.iaiabl-patch img{{display:block;max-width:none;border:2px solid #ffd92f;margin:0}}
.iaiabl-patch figcaption,.iaiabl-thumb figcaption{{font-size:.8em;color:#333;max-width:16em}}
.iaiabl-thumb-frame{{display:block;position:relative;width:var(--px);height:var(--px)}}
.iaiabl-thumb-frame>img{{position:absolute;left:0;top:0;width:100%;height:100%;max-width:none;margin:0}}
.iaiabl-box{{position:absolute;border:2px solid #ffd92f;box-sizing:border-box}}
.iaiabl-frame>.iaiabl-match{{display:none;outline:1px solid #000}}
.iaiabl-read-roi{{flex:0 1 auto;max-width:100%}}
.iaiabl-whole{{flex:0 0 auto;width:min-content;margin:34px 0 6px}}
.iaiabl-whole img{{display:block;max-width:none;margin:0;border:0}}
.iaiabl-whole figcaption{{font-size:.8em;color:#333;line-height:1.35;margin-top:3px}}
p.iaiabl-whole{{flex:0 1 12em;width:auto;font-size:.85em;color:#444}}
.iaiabl-views{{margin:2px 0;font-size:.9em}}
.iaiabl-views button{{font:inherit;font-size:.95em;border:1px solid #2b6cb0;color:#2b6cb0;background:#fff;border-radius:3px;padding:0 7px;cursor:pointer}}
.iaiabl-views button:focus-visible{{outline:3px solid #e0a000;outline-offset:2px}}
.iaiabl-table{{font-size:.9em;border-collapse:collapse;margin:4px 0}}
.iaiabl-table td,.iaiabl-table th{{padding:1px 8px;border-bottom:1px solid #e4e4e4;text-align:left}}
.iaiabl-table td.num{{text-align:right;white-space:nowrap}}
.iaiabl-table .iaiabl-bar{{width:5em}}
</style>"""



class Explorer(W.VBox):
    """What every explorer function returns: a VBox (title, the note on model and data, the mode
    line, optional intro, labelled controls, view; DOM class ``iaiabl-explorer``) with handles for
    programs and tests.

    mode        "live" or "static"
    mode_line   the HTML widget saying which mode the reader is in
    controls    {name: widget} (e.g. "case", "top", "prototype")
    view        live: the widget that callbacks redraw; static: the outer ``Stack``
    views       static: the precomputed view widgets, in stack order
    links       static: the links tying controls to stacks in the browser
    """

    def __init__(self, title: str, mode: str, note: str, controls: dict[str, W.Widget],
                 view: W.Widget, views: Sequence[W.Widget] = (), links: Sequence[Any] = (),
                 intro: str = "", labels: dict[str, str] | None = None, demo: str = "", **kwargs):
        header = W.HTML(style_sheet() + f"<div style='font-weight:600;font-size:1.05em'>{html.escape(title)}</div>"
                        + demo, layout=W.Layout(width="100%"))
        line = STATIC_LINE if mode == "static" else LIVE_LINE
        colour = "#6a3d9a" if mode == "static" else "#1b7837"
        self.mode_line = W.HTML(
            f"<div class='iaiabl-mode iaiabl-mode-{mode}' style='font-size:0.85em;color:{colour}'>"
            f"<b>{line}.</b> {note}</div>", layout=W.Layout(width="100%"))
        rows = [labelled((labels or {}).get(name, ""), ctl) for name, ctl in controls.items()]
        intro_w = [html_view(f"<div class='iaiabl-view'>{intro}</div>")] if intro else []
        super().__init__([header, self.mode_line, *intro_w, *rows, view], **kwargs)
        self.add_class("iaiabl-explorer")
        self.mode = mode
        self.controls = dict(controls)
        self.view = view
        self.views = list(views)
        self.links = list(links)

    def current_html(self) -> str:
        """The HTML the reader sees now in the view (static: following the stacks' selection)."""
        return visible_html(self.view)


def visible_html(widget: W.Widget) -> str:
    """The HTML shown by ``widget``: a Stack's selected child, a Box's children in order, an HTML
    widget's value (controls show none)."""
    if isinstance(widget, W.Stack):
        if widget.selected_index is None or not widget.children:
            return ""
        return visible_html(widget.children[widget.selected_index])
    if isinstance(widget, W.Box):
        return "".join(visible_html(c) for c in widget.children)
    if isinstance(widget, W.HTML):
        return widget.value
    return ""


def labelled(label: str, control: W.Widget) -> W.Widget:
    """``control`` with ``label`` in front, as an HTML widget rather than the control's own
    ``description``: the embedded widget manager typesets descriptions with MathJax 2's API
    (``MathJax.Hub.Queue``), which fails on a page that loads MathJax 3 (the book's)."""
    if not label:
        return control
    return W.HBox([W.HTML(f"<b>{html.escape(label)}</b>", layout=W.Layout(margin="0 0.5em 0 0")),
                   control], layout=W.Layout(align_items="center", flex_flow="row wrap"))


def stack(children: Sequence[W.Widget], selected: int = 0) -> W.Stack:
    return W.Stack(list(children), selected_index=selected, layout=W.Layout(width="100%"))


def html_view(value: str) -> W.HTML:
    return W.HTML(value, layout=W.Layout(width="100%"))


def dropdown(labels: Sequence[str], width: str = "32em") -> W.Dropdown:
    return W.Dropdown(options=[(lab, i) for i, lab in enumerate(labels)], value=0,
                      layout=W.Layout(width=width))


def link(control: W.Widget, trait: str, target: W.Stack):
    """Tie ``control.<trait>`` (an index) to ``target.selected_index`` in the browser (one way:
    the control drives the view)."""
    return W.jsdlink((control, trait), (target, "selected_index"))


def share_case(*explorers: Explorer) -> list:
    """One chosen case for ``explorers`` (each with a ``"case"`` control and ``rows``, the same
    rows in the same order: build the others with ``cases=first.rows``): choosing a case in any of
    them chooses it in all. All static: the case lists' ``index`` linked in the browser
    (``ipywidgets.jslink``, no kernel needed), and, for a list ordered otherwise (the case reader's
    lists by call, by flagged evidence, by disagreement), whose positions are other cases, the
    small handler every case view carries (``access.SHOWN_JS``), enabled by the share group written
    in each explorer's mode line (``data-group``); otherwise the lists' ``value`` (the case's
    position in ``rows``, whatever the order shown) linked by the kernel. Each explorer's mode line
    says so. Returns the links (also added to each explorer's ``links``); sharing the same explorers
    again changes nothing and returns the same links."""
    if len(explorers) < 2:
        raise InputError("share_case: give at least two explorers")
    for ex in explorers:
        if "case" not in getattr(ex, "controls", {}) or getattr(ex, "rows", None) is None:
            raise InputError(f"share_case: {type(ex).__name__} has no case list to share")
    if all(getattr(ex, "shared", None) == list(explorers) for ex in explorers):
        return list(explorers[0].shared_links)      # shared already: no second link, no second line
    first = list(explorers[0].rows)
    for ex in explorers[1:]:
        if list(ex.rows) != first:
            raise InputError("share_case: the explorers show different cases; build them with the same "
                             f"cases (cases=first.rows): {first} against {list(ex.rows)}")
    static = all(ex.mode == "static" for ex in explorers)
    links = []
    for a, b in zip(explorers, explorers[1:]):
        ca, cb = a.controls["case"], b.controls["case"]
        links.append(W.jslink((ca, "index"), (cb, "index")) if static else W.link((ca, "value"), (cb, "value")))
    group = f" data-group='{explorers[0].model_id}'" if static else ""
    others = "the other explorer" if len(explorers) == 2 else f"the other {len(explorers) - 1} explorers"
    line = (f"<div class='iaiabl-shared'{group}>The case chosen here, in any order of the list, is chosen "
            f"in {others} of this page too.</div>")
    for ex in explorers:
        ex.controls["case"].add_class("iaiabl-case-picker")
        ex.links = list(ex.links) + links
        ex.shared, ex.shared_links = list(explorers), links
        ex.mode_line.value = ex.mode_line.value + line
    return links

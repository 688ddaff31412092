"""Images for the explorers' views, as HTML: lossless PNG layers and the reading frame.

Every image is a PNG data URI of the array itself (8-bit grey, RGB or RGBA, never a palette, so
the colours of a heat map are the colours of the scale and nothing bands). A view stacks layers in
a *reading frame*: the region of interest, large (``READING_PX`` CSS pixels) and without overlay
unless the reader asks, over it the heat maps (one at a time, chosen by the buttons above the
image, each with a box around the part that matches most closely) and optional marks (e.g. the
annotated region); a click on the image enlarges it to the
window and a second click shrinks it back. The interaction is HTML and CSS only (radio buttons,
check boxes, ``:checked`` selectors; the rules are in :func:`iaiabl_lib.widgets.frame.style_sheet`), so
it works the same with a kernel, in the static page, and with no widget code at all.

Heat maps: each map gets its own scale (per map, ``plots.fit_heat_scale``), so that every map shows
where its prototype matches in this case, whatever the model's range of similarities; how strongly
it matches is in the numbers of its legend (and in the similarity written beside the evidence). A
layer is opaque where the map reaches the scale's start and transparent below it
(``plots.heat_rgba``): over the image the colours are exactly the legend's, and the image shows
through where the prototype matches least. Each heat map's legend (:func:`colour_legend`, its
colours from the same function, its numbers those of the map) is shown with it.
"""
from __future__ import annotations

import base64
import html
import io
import itertools
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from . import access as A

__all__ = ["READING_PX", "COMPARE_PX", "THUMB_PX", "MAX_LAYERS", "HEAT_PX", "png_uri", "grey_uri",
           "similarity_uri", "marks_uri", "colour_legend", "heat_layer", "heat_alt", "Layer", "reading_frame", "patch_figure",
           "thumbnail", "LEGEND_STOPS"]

READING_PX = 512
"""Rendered width of a region of interest in a reading view (CSS pixels)."""
COMPARE_PX = 330
"""Rendered width of each of two regions shown side by side (click to enlarge)."""
THUMB_PX = 192
"""Rendered width of a whole source or neighbour case beside a patch."""
MAX_LAYERS = 12
"""Heat maps (and mark layers) a reading frame can switch between (the CSS has one rule each)."""
LEGEND_STOPS = 33
"""Colour stops of the HTML legend's gradient (the colour map is sampled at this many points)."""
HEAT_PX = 64
"""Heat maps are encoded at most this many pixels wide (the browser enlarges them smoothly): a map
is the bilinear enlargement of the model's 8 × 8 (tiny) or 14 × 14 (paper) grid, so more pixels
would add bytes, not detail."""

_ids = itertools.count(1)


def _uid(prefix: str) -> str:
    return f"iaiabl-{prefix}-{next(_ids)}"


def png_uri(array: np.ndarray) -> str:
    """A uint8 array (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA as a lossless PNG data URI."""
    from PIL import Image

    a = np.ascontiguousarray(array)
    if a.dtype != np.uint8:
        raise TypeError(f"png_uri takes uint8 pixels, got {a.dtype}")
    mode = {2: "L"}.get(a.ndim) or {3: "RGB", 4: "RGBA"}.get(a.shape[-1] if a.ndim == 3 else 0)
    if mode is None:
        raise ValueError(f"png_uri: expected (H, W), (H, W, 3) or (H, W, 4), got {a.shape}")
    buf = io.BytesIO()
    Image.fromarray(a, mode=mode).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _uint8(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.dtype == np.uint8:
        return a
    a = a.astype(np.float64)
    return np.clip(np.rint(a * (255 if a.max() <= 1 else 1)), 0, 255).astype(np.uint8)


def _shrink(a: np.ndarray, px: int | None) -> np.ndarray:
    """``a`` (H, W) averaged down to at most ``px`` pixels wide (float32), or unchanged."""
    from PIL import Image

    a = np.asarray(a, dtype=np.float32)
    if px is None or max(a.shape) <= px:
        return a
    h, w = a.shape
    size = (max(1, round(w * px / max(h, w))), max(1, round(h * px / max(h, w))))
    return np.asarray(Image.fromarray(a, mode="F").resize(size, Image.Resampling.BOX))


def grey_uri(image: np.ndarray, max_px: int | None = None) -> str:
    """A grey region of interest (uint8, or floats in [0, 1]) at its own resolution, or averaged
    down to ``max_px`` pixels wide."""
    a = _uint8(image)
    if max_px is not None and max(a.shape) > max_px:
        a = np.clip(np.rint(_shrink(a, max_px)), 0, 255).astype(np.uint8)
    return png_uri(a)


def similarity_uri(similarity_map: np.ndarray, scale=None, max_px: int = HEAT_PX) -> str:
    """A similarity map as an RGBA layer in the colours of ``scale`` (``plots.heat_rgba``: opaque
    where coloured, transparent below the scale's start), at most ``max_px`` pixels wide.
    ``scale``: a ``plots.HeatScale``; default, the one fitted to this map."""
    from ..plots import fit_heat_scale, heat_rgba

    scale = fit_heat_scale(similarity_map) if scale is None else scale
    return png_uri(heat_rgba(_shrink(similarity_map, max_px), scale))


def marks_uri(shape: tuple[int, int], marks: Sequence[tuple[np.ndarray, tuple[int, int, int, int]]],
              outlines: Sequence[tuple[np.ndarray, tuple[int, int, int, int]]] = (),
              upscale: int | None = None) -> str:
    """A transparent RGBA layer: each ``(mask, rgba)`` of ``marks`` fills its pixels, each
    ``(mask, rgba)`` of ``outlines`` draws its boundary, at ``upscale`` × the image's resolution
    (default: about 256 pixels wide; sharp edges, thin outlines once the frame enlarges it)."""
    h, w = shape
    upscale = max(1, 256 // max(h, w)) if upscale is None else int(upscale)
    out = np.zeros((h * upscale, w * upscale, 4), np.uint8)
    for mask, rgba in marks:
        big = np.kron(np.asarray(mask, bool), np.ones((upscale, upscale), bool))
        out[big] = rgba
    for mask, rgba in outlines:
        big = np.kron(np.asarray(mask, bool), np.ones((upscale, upscale), bool))
        inner = big.copy()
        inner[1:, :] &= big[:-1, :]
        inner[:-1, :] &= big[1:, :]
        inner[:, 1:] &= big[:, :-1]
        inner[:, :-1] &= big[:, 1:]
        out[big & ~inner] = rgba
    return png_uri(out)


def _num(v: float) -> str:
    return f"{v:.2g}" if abs(v) < 10 else f"{v:.3g}"


def colour_legend(scale, what: str | None = None) -> str:
    """The HTML legend of one heat map's ``scale`` (a ``plots.HeatScale``, per map): a swatch for
    "no colour" (below the scale's start, where the image shows through), the colour ramp from the
    start to the map's highest value with the numbers at its ends and middle, and the same numbers as
    data attributes for programs. Its colours are ``plots.heat_rgba``'s, those of the layer."""
    from ..plots import SIMILARITY_CMAP, SIMILARITY_LABEL, heat_rgba

    label = SIMILARITY_LABEL + (f" ({what})" if what else "")
    attrs = (f"data-cmap='{SIMILARITY_CMAP}' data-scale='per map' data-low='{scale.low:.6g}' "
             f"data-vmin='{scale.start:.6g}' data-vmax='{scale.high:.6g}' "
             f"data-label='{html.escape(SIMILARITY_LABEL, quote=True)}'")
    if scale.flat:
        return (f"<div class='iaiabl-legend' {attrs}>Heat map: {html.escape(label)} is "
                f"{_num(scale.high)} everywhere in this map, so no part of it matches more than "
                "another and nothing is coloured.</div>")
    values = np.linspace(scale.start, scale.high, LEGEND_STOPS)
    rgb = heat_rgba(values, scale)[:, :3]
    stops = ", ".join(f"rgb({r}, {g}, {b}) {100 * k / (LEGEND_STOPS - 1):.2f}%"
                      for k, (r, g, b) in enumerate(rgb))
    mid = (scale.start + scale.high) / 2
    return (f"<div class='iaiabl-legend' {attrs}>"
            f"<span class='iaiabl-legend-label'>Heat map colours: {html.escape(label)}</span>, fitted "
            "to this map: "
            f"<span class='iaiabl-legend-none' title='no colour: the image shows through'></span> "
            f"no colour below <span class='iaiabl-legend-lo'>{_num(scale.start)}</span> "
            f"(its lowest value is {_num(scale.low)}), then "
            f"<span class='iaiabl-legend-ramp'><span class='iaiabl-legend-bar' "
            f"style='background:linear-gradient(to right, {stops})'></span>"
            f"<span class='iaiabl-legend-ticks'><span>{_num(scale.start)}</span><span>{_num(mid)}</span>"
            f"<span class='iaiabl-legend-hi'>{_num(scale.high)}</span></span></span> "
            "(its highest value: the closest match in this case).</div>")


def _heat_attrs(scale) -> str:
    from ..plots import SIMILARITY_CMAP, SIMILARITY_LABEL

    return (f"data-cmap='{SIMILARITY_CMAP}' data-scale='per map' data-low='{scale.low:.6g}' "
            f"data-vmin='{scale.start:.6g}' data-vmax='{scale.high:.6g}' "
            f"data-label='{html.escape(SIMILARITY_LABEL, quote=True)}'")


def heat_alt(what: str, scale) -> str:
    """The alt text of a heat map: what it shows (``what``, "where prototype 3 (spiculated) matches
    test case 5") and its scale's numbers."""
    if scale.flat:
        return f"Heat map of {what}: the map is {_num(scale.high)} everywhere, so nothing is coloured"
    return (f"Heat map of {what}: coloured where the similarity is at least {_num(scale.start)}, up to "
            f"{_num(scale.high)} at the closest match (the legend gives the colours)")


def heat_layer(label: str, similarity_map: np.ndarray, key: str = "", on: bool = False,
               what: str = "", box: tuple[int, int, int, int] | None = None) -> "Layer":
    """A heat-map layer of a reading frame: the map on its own fitted scale, with its legend and an
    alt text saying what it shows (``what``; default, where the prototype matches this image).
    ``box`` (y0, x0, y1, x1, image pixels): the part that matches most closely, boxed on the image
    while the layer is shown."""
    from ..plots import fit_heat_scale

    scale = fit_heat_scale(similarity_map)
    alt = heat_alt(what or f"where {label.removeprefix('heat map: ')} matches this image", scale)
    if box is not None:
        alt += "; a yellow box marks the part that matches most closely"
    return Layer(label, similarity_uri(similarity_map, scale), key=key, on=on, scale=scale,
                 legend=colour_legend(scale), alt=alt, box=None if box is None else tuple(int(v) for v in box))


@dataclass
class Layer:
    """One layer of a reading frame. kind "heat": a similarity map (``similarity_uri``), one heat
    map shown at a time; kind "marks": a transparent layer with its own check box."""

    label: str
    uri: str
    kind: str = "heat"
    on: bool = False
    key: str = ""          # a data-layer attribute (e.g. the prototype index) for programs
    scale: object = None   # heat: its plots.HeatScale (the numbers of its legend)
    legend: str = ""       # heat: its legend (HTML), shown while the layer is
    alt: str = ""          # what the layer shows, for screen readers (default: its label)
    box: tuple | None = None   # heat: (y0, x0, y1, x1) image pixels, boxed while the layer is shown


def reading_frame(image: np.ndarray, layers: Sequence[Layer] = (), px: int = READING_PX,
                  alt: str = "region of interest", caption: str = "", max_px: int | None = None) -> str:
    """The region of interest at ``px`` CSS pixels wide, without overlay unless a layer is ``on``;
    buttons above it choose the heat map ("no heat map" first) and toggle the marks; a click on the
    image (or the "enlarge" button) enlarges it to the window, and a second click or Escape shrinks
    it back. ``max_px``: encode the image at most this many pixels wide (views repeated many times on
    a page; a reading view keeps the image's own pixels).

    Keyboard and screen readers (:mod:`.access`): every button, the image included, is reached with
    Tab and pressed with Enter or Space, says whether it is on (``aria-pressed``), and every image
    has an alt text saying what it shows (``alt``: the region; each layer's ``alt``)."""
    heat = [ly for ly in layers if ly.kind == "heat"]
    marks = [ly for ly in layers if ly.kind == "marks"]
    if len(heat) + len(marks) > MAX_LAYERS:
        raise ValueError(f"a reading frame holds at most {MAX_LAYERS} layers, got {len(heat) + len(marks)}")
    group, zoom = _uid("heat"), _uid("zoom")
    inputs, labels, imgs, legends = [], [], [], []
    if heat:
        first_on = next((k for k, ly in enumerate(heat, 1) if ly.on), 0)
        for k, ly in enumerate([None, *heat]):
            rid = f"{group}-{k}"
            inputs.append(f"<input type='radio' name='{group}' id='{rid}' class='iaiabl-pick-{k}'"
                          f"{' checked' if k == first_on else ''}>")
            text = "no heat map" if ly is None else ly.label
            key = "" if ly is None else html.escape(ly.key, quote=True)
            labels.append(A.toggle_label(rid, html.escape(text), k == first_on, f"iaiabl-pick-{k}",
                                         f"data-layer='{key}'"))
            if ly is not None:
                attrs = _heat_attrs(ly.scale) if ly.scale is not None else ""
                imgs.append(f"<img class='iaiabl-layer iaiabl-heat iaiabl-layer-{k}' src='{ly.uri}' "
                            f"data-layer='{key}' {attrs} alt='{html.escape(ly.alt or ly.label, quote=True)}'>")
                if ly.box is not None:
                    imgs.append(_box_span(ly.box, np.asarray(image).shape[:2],
                                          f"iaiabl-box iaiabl-match iaiabl-layer-{k}", f"data-layer='{key}'"))
                if ly.legend:
                    legends.append(f"<div class='iaiabl-layer-legend iaiabl-legend-{k}' "
                                   f"data-layer='{key}'>{ly.legend}</div>")
    for k, ly in enumerate(marks, 1):
        cid = f"{group}-m{k}"
        key = html.escape(ly.key, quote=True)
        inputs.append(f"<input type='checkbox' id='{cid}' class='iaiabl-show-{k}'{' checked' if ly.on else ''}>")
        labels.append(A.toggle_label(cid, html.escape(ly.label), ly.on, f"iaiabl-show-{k}", f"data-layer='{key}'"))
        imgs.append(f"<img class='iaiabl-marks iaiabl-extra-{k}' src='{ly.uri}' "
                    f"data-layer='{key}' alt='{html.escape(ly.alt or ly.label, quote=True)}'>")
    inputs.append(f"<input type='checkbox' id='{zoom}' class='iaiabl-zoom'>")
    labels.append(A.toggle_label(zoom, "enlarge", False, "iaiabl-zoom-label",
                                 label="enlarge the image to the window (Escape shrinks it)"))
    size = np.asarray(image).shape
    frame = A.toggle_label(
        zoom, f"<img class='iaiabl-roi' src='{grey_uri(image, max_px)}' alt='{html.escape(alt, quote=True)}' "
              f"data-native='{size[1]}x{size[0]}'>" + "".join(imgs),
        False, "iaiabl-frame", f"style='--px:{px}px' title='click to enlarge; click again or press Escape to shrink'",
        label=f"{alt}: press to enlarge the image to the window, Escape to shrink it")
    return (f"<div class='iaiabl-reader' data-px='{px}' {A.handlers()}>" + "".join(inputs)
            + f"<div class='iaiabl-picks'>{''.join(labels)}</div>" + frame
            + (f"<div class='iaiabl-legends'>{''.join(legends)}</div>" if legends else "")
            + (f"<div class='iaiabl-caption'>{caption}</div>" if caption else "") + "</div>")


def _box_span(box: Sequence[float], shape: tuple[int, int], cls: str = "iaiabl-box", attrs: str = "") -> str:
    """An outline of ``box`` (y0, x0, y1, x1, ends exclusive, pixels of an image of ``shape``) over
    that image, in percentages of its frame (it scales with the frame, enlarged or not)."""
    y0, x0, y1, x1 = (float(v) for v in box)
    h, w = shape
    return (f"<span class='{cls}' {attrs} style='left:{100 * x0 / w:.2f}%;top:{100 * y0 / h:.2f}%;"
            f"width:{100 * (x1 - x0) / w:.2f}%;height:{100 * (y1 - y0) / h:.2f}%'></span>")


def _plain(caption: str) -> str:
    """``caption`` (HTML) as plain text for an ``alt`` attribute."""
    return html.escape(html.unescape(re.sub(r"<[^>]+>", "", caption)), quote=True)


def _crop(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    y0, x0, y1, x1 = (int(v) for v in box)
    h, w = np.asarray(image).shape[:2]
    y0, x0, y1, x1 = max(0, y0), max(0, x0), min(h, y1), min(w, x1)
    return np.asarray(image)[y0:y1, x0:x1]


def patch_figure(image: np.ndarray, box: tuple[int, int, int, int] | None, scale: float,
                 caption: str, cls: str = "", data: str = "", alt: str = "") -> str:
    """The patch ``box`` of ``image`` at ``scale`` CSS pixels per image pixel (patches shown side by
    side with the same ``scale`` are at the same scale), with ``caption`` (HTML) under it; ``alt``
    (plain text) what it shows, default the caption."""
    if box is None:
        body = "<div class='iaiabl-missing'>not recorded</div>"
    else:
        crop = _crop(image, box)
        if not crop.size:
            body = "<div class='iaiabl-missing'>empty</div>"
        else:
            body = (f"<img src='{grey_uri(crop)}' alt='{html.escape(alt, quote=True) if alt else _plain(caption)}' "
                    f"style='width:{crop.shape[1] * scale:.0f}px;height:{crop.shape[0] * scale:.0f}px' "
                    f"data-native='{crop.shape[1]}x{crop.shape[0]}' data-scale='{scale:g}'>")
    return (f"<figure class='iaiabl-patch {cls}' {data}>{body}"
            f"<figcaption>{caption}</figcaption></figure>")


def thumbnail(image: np.ndarray, box: tuple[int, int, int, int] | None, caption: str,
              px: int = THUMB_PX, heat: np.ndarray | None = None, alt: str = "", heat_what: str = "") -> str:
    """A whole case at ``px`` CSS pixels (encoded at most that wide) with ``box`` outlined (and a
    heat map over it if given, ``heat_what`` saying what it shows: "where prototype 3 matches …");
    ``alt`` (plain text) what the image shows, default the caption and, with a box, that it is
    outlined."""
    h, w = np.asarray(image).shape[:2]
    if not alt:
        alt = html.unescape(re.sub(r"<[^>]+>", "", caption))
        if box is not None:
            alt += " (the whole region of interest, the matching patch outlined in yellow)"
    over, legend = "", ""
    if heat is not None:
        from ..plots import fit_heat_scale

        scale = fit_heat_scale(heat)
        what = html.escape(heat_alt(heat_what or "where the prototype matches this case", scale), quote=True)
        over = (f"<img class='iaiabl-heat iaiabl-on' src='{similarity_uri(heat, scale)}' {_heat_attrs(scale)} "
                f"alt='{what}'>")
        legend = colour_legend(scale)
    outline = "" if box is None else _box_span(box, (h, w))
    return (f"<figure class='iaiabl-thumb'><span class='iaiabl-thumb-frame' style='--px:{px}px'>"
            f"<img class='iaiabl-roi' src='{grey_uri(image, px)}' alt='{html.escape(alt, quote=True)}'>"
            f"{over}{outline}</span><figcaption>{caption}{legend}</figcaption></figure>")

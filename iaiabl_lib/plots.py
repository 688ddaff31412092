"""Figures in the layouts of Barnett et al. (2021): Fig. 3 (a case's reasoning), Fig. 4 (with and
without the fine-annotation loss), Fig. 5 (class activation map vs GradCAM / GradCAM++), Fig. 6
(activation precision), plus the prototype gallery, ROC curves and training curves.

Every function returns a ``matplotlib.figure.Figure`` built without pyplot (nothing is shown, no
global figure state; Jupyter displays a returned Figure, ``fig.savefig`` writes it). One style for
all: grey images, boxes in ``BOX_COLOUR``, annotated regions as green contours, one colour per margin
class (``CLASS_COLOURS``), and one way to draw a similarity map (a prototype's activation map,
Eq. 1): ``SIMILARITY_CMAP`` over a scale FITTED to the maps drawn (:func:`fit_heat_scale`, a
:class:`HeatScale`), opaque where the map reaches the scale's start and no colour below it, so that
the image shows through where the prototype matches least, and the colours over the image are
exactly the colour bar's (no half-transparent overlay whose colours depend on the grey beneath).
A figure fits one scale to all the maps it draws (per figure: one colour bar, so the same colour
means the same similarity in every panel); the explorers fit one to each map (per map: its own
legend), so that every map shows where the prototype matches, whatever the model's range of
similarities (one run's maps peak at 0.2, another's at 3: a fixed range painted the first in one
colour). The numbers of a scale are on its colour bar or legend. :func:`heat_rgba` gives the colours
to the figures and to the explorers' layers and legends alike.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import matplotlib
import matplotlib.patheffects
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from .config import MARGINS
from .words import for_against, pct

__all__ = [
    "STYLE", "ACTIVATION_CMAP", "SIMILARITY_CMAP", "SIMILARITY_LABEL", "HEAT_FLOOR", "HeatScale",
    "fit_heat_scale", "similarity_rgb", "heat_rgba", "draw_heat", "heat_colourbar", "CLASS_COLOURS",
    "plot_case_explanation", "plot_prototype_gallery",
    "plot_cam_comparison", "plot_activation_precision", "plot_fine_vs_nofine", "plot_roc",
    "plot_history", "figure_png", "plot_whole_view", "scale_bar_mm",
]

SIMILARITY_CMAP = "jet"
"""The colour map of similarity (activation) maps, as in the paper's figures."""
HEAT_FLOOR = 0.25
"""Where a fitted scale's colours start: its lowest value plus this share of its range. Below it a
map gets no colour and the image shows through (the lowest quarter of a map is where the prototype
matches least; coloured, it would cover the whole region of interest in dark blue)."""
SIMILARITY_LABEL = "similarity to the prototype"
"""The words under every similarity colour bar and in the explorers' legend."""
ACTIVATION_CMAP = SIMILARITY_CMAP
"""The colour map of the other activation maps (class activation maps, Grad-CAM): the same colours."""
OVERLAY_ALPHA = 0.45
"""Opacity of the maps that are not drawn on a fitted scale (``iaiabl explain``'s report)."""
BOX_COLOUR = "#ffd92f"
MASK_COLOUR = "#1a9850"
TOP_COLOUR = "#d7301f"
"""Activation precision (Fig. 6): the annotated region (MASK_COLOUR), the top pixels outside it
(TOP_COLOUR) and inside it (TOP_INSIDE_COLOUR), in the figures and in the explorers alike."""
TOP_INSIDE_COLOUR = "#ffd92f"
CLASS_COLOURS = {"circumscribed": "#1b9e77", "indistinct": "#7570b3", "spiculated": "#d95f02"}
STAGE_COLOURS = {"warm": "#999999", "joint": "#1f78b4", "push": "#e31a1c", "last_layer": "#33a02c",
                 "prune": "#6a3d9a", "blackbox": "#ff7f00"}
STYLE = {
    "font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "legend.fontsize": 8,
    "xtick.labelsize": 8, "ytick.labelsize": 8, "figure.dpi": 100, "savefig.dpi": 120,
    "axes.spines.top": False, "axes.spines.right": False, "font.family": "DejaVu Sans",
}


@contextmanager
def _style():
    with matplotlib.rc_context(STYLE):
        yield


def figure_png(fig: Figure, dpi: int | None = None) -> bytes:
    """The figure as PNG bytes (for reports)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi or STYLE["savefig.dpi"],
                facecolor="white")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


def _grey(image) -> np.ndarray:
    """Displayable grey (S, S) from uint8 (S, S), [0, 1] float, or a normalised (3, S, S)."""
    a = _np(image)
    if a.ndim == 3 and a.shape[0] == 3:          # ImageNet-normalised
        from .config import IMAGENET_MEAN, IMAGENET_STD
        a = np.clip(a[0] * IMAGENET_STD[0] + IMAGENET_MEAN[0], 0, 1)
    return np.squeeze(a)


def _show_image(ax, image, title: str | None = None) -> None:
    g = _grey(image)
    vmax = 255 if g.dtype == np.uint8 else 1.0
    ax.imshow(g, cmap="gray", vmin=0, vmax=vmax, interpolation="nearest")
    _clean(ax, title)


def _clean(ax, title: str | None = None) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)
    if title:
        ax.set_title(title)


@dataclass(frozen=True)
class HeatScale:
    """A colour scale fitted to one or more maps: no colour below ``start``, then the colour map
    from ``start`` to ``high`` (the highest value, the top colour). ``low`` is the lowest value, for
    the legend. A flat map (``high - low`` below 1e-9) gets no colour at all: no part of it matches
    more than another."""

    low: float
    start: float
    high: float

    @property
    def flat(self) -> bool:
        return not self.high - self.low > 1e-9

    def norm(self) -> matplotlib.colors.Normalize:
        return matplotlib.colors.Normalize(self.start, self.high if not self.flat else self.start + 1, clip=True)


def fit_heat_scale(*maps, floor: float = HEAT_FLOOR) -> HeatScale:
    """The scale fitted to ``maps`` (arrays of any shape, together): from their lowest to their
    highest finite value, colours from ``lowest + floor × range``. Refuses maps with no finite value."""
    values = np.concatenate([_np(m).astype(np.float64).ravel() for m in maps]) if maps else np.zeros(0)
    values = values[np.isfinite(values)]
    if not values.size:
        raise ValueError("fit_heat_scale: no finite value in the maps given; pass at least one map with numbers")
    low, high = float(values.min()), float(values.max())
    return HeatScale(low, low + float(floor) * (high - low), high)


def similarity_rgb(values, scale: HeatScale) -> np.ndarray:
    """The colours of ``scale`` for ``values`` (any shape), clipped at both ends: uint8 (..., 3)."""
    cmap = matplotlib.colormaps[SIMILARITY_CMAP]
    rgba = cmap(scale.norm()(np.asarray(values, dtype=np.float64)))
    return np.rint(np.asarray(rgba)[..., :3] * 255).astype(np.uint8)


def heat_rgba(values, scale: HeatScale) -> np.ndarray:
    """A map as an opaque colour layer: uint8 (..., 4), the colours of ``scale`` (alpha 255) where a
    value reaches ``scale.start``, transparent (alpha 0) below it and everywhere on a flat map. The
    figures, the explorers' layers and their legends all take their colours from here."""
    v = np.asarray(values, dtype=np.float64)
    out = np.zeros(v.shape + (4,), np.uint8)
    out[..., :3] = similarity_rgb(v, scale)
    out[..., 3] = np.where((v >= scale.start) & np.isfinite(v) & (not scale.flat), 255, 0)
    return out


def draw_heat(ax, image, amap, scale: HeatScale, title: str | None = None):
    """``amap`` over the grey ``image`` in the colours of ``scale`` (:func:`heat_rgba`: opaque where
    coloured, the image elsewhere). Returns the image artist."""
    _show_image(ax, image, title)
    return ax.imshow(heat_rgba(_np(amap), scale), interpolation="nearest")


def heat_colourbar(fig: Figure, scale: HeatScale, axes, label: str = SIMILARITY_LABEL,
                   location: str = "right"):
    """The colour bar of ``scale``: its colours from ``start`` to ``high``, ticks at both ends (and
    between), and under it where colour starts (below, the image shows through) and the lowest value."""
    from matplotlib.cm import ScalarMappable

    solid = ScalarMappable(norm=scale.norm(), cmap=SIMILARITY_CMAP)
    if location == "bottom":
        cb = fig.colorbar(solid, ax=axes, location="bottom", fraction=0.04, pad=0.02, shrink=0.5, aspect=40)
    else:
        cb = fig.colorbar(solid, ax=axes, fraction=0.025, pad=0.02, shrink=0.8)
    cb.set_ticks(np.linspace(scale.start, scale.high, 3))
    cb.set_ticklabels([f"{t:.2g}" for t in np.linspace(scale.start, scale.high, 3)])
    cb.set_label(f"{label}\n(no colour below {scale.start:.2g}; lowest {scale.low:.2g})")
    return cb


def _overlay(ax, image, amap, scale: HeatScale, title: str | None = None):
    return draw_heat(ax, image, amap, scale, title)


def _box(ax, box, colour: str = BOX_COLOUR, lw: float = 1.5) -> None:
    if box is None:
        return
    y0, x0, y1, x1 = [float(v) for v in box]
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=colour, lw=lw))


def _contour(ax, mask, colour: str = MASK_COLOUR) -> None:
    if mask is None:
        return
    m = _np(mask).astype(float).squeeze()
    if m.any() and not m.all():
        ax.contour(m, levels=[0.5], colors=[colour], linewidths=1.2)


# ---------------------------------------------------------------------------------------------
# Fig. 3: a case's reasoning
# ---------------------------------------------------------------------------------------------


def plot_case_explanation(expl, max_rows: int | None = None) -> Figure:
    """Paper Fig. 3: one row per top prototype; columns: the case with the prototype's activation
    map (PAM) and its box, the prototype (patch of its source), the source training case with the
    box, the source's self-activation, and similarity × weight = contribution.

    Axes: 5 per row plus two colour bars (rows = ``len(expl.prototypes)``, at most ``max_rows``):
    the maps on this case share one scale fitted to them, the self-activations another (a prototype
    on its own source patch is many times more similar than on any other case: one scale for both
    would leave this case's maps without colour).
    """
    protos = list(expl.prototypes)[:max_rows] if max_rows else list(expl.prototypes)
    rows = max(1, len(protos))
    case_maps = [p.activation for p in protos]
    self_maps = [p.self_activation for p in protos if p.self_activation is not None]
    scale = fit_heat_scale(*case_maps) if case_maps else None
    self_scale = fit_heat_scale(*self_maps) if self_maps else None
    with _style():
        fig = Figure(figsize=(11, 2.3 * rows + 0.9), layout="constrained")
        axes = fig.subplots(rows, 5, squeeze=False, gridspec_kw={"width_ratios": [1, 1, 1, 1, 1.15]})
        heads = ["this case: where the\nprototype is found", "prototype", "source training case",
                 "self-activation of\nthe prototype", "similarity × weight\n= points"]
        mappable = None
        for r in range(rows):
            ax = axes[r]
            if r >= len(protos):
                for a in ax:
                    _clean(a)
                ax[0].text(0.5, 0.5, "no prototypes", ha="center", va="center", transform=ax[0].transAxes)
                continue
            p = protos[r]
            mappable = _overlay(ax[0], expl.image, p.activation, scale)
            _box(ax[0], p.case_box)
            _contour(ax[0], expl.lesion_mask)
            if p.patch_image is not None and p.patch_image.size:
                _show_image(ax[1], p.patch_image)
            else:
                _clean(ax[1])
                ax[1].text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax[1].transAxes)
            if p.source_image is not None:
                _show_image(ax[2], p.source_image)
                _box(ax[2], p.box)
            else:
                _clean(ax[2])
            if p.source_image is not None and p.self_activation is not None:
                _overlay(ax[3], p.source_image, p.self_activation, self_scale)
                _box(ax[3], p.box)
            else:
                _clean(ax[3])
            for a in ax[:4]:
                for s in a.spines.values():
                    s.set_visible(True)
                    s.set_edgecolor(CLASS_COLOURS[p.class_name])
                    s.set_linewidth(2)
            ax[0].set_ylabel(f"prototype {p.index}\n{p.class_name}", color=CLASS_COLOURS[p.class_name])
            src = p.source_id or "training case"
            ax[2].set_xlabel(src, fontsize=7)
            _clean(ax[4])
            ax[4].text(0.02, 0.62, f"{p.similarity:.3f} × {p.weight:+.3f}\n= {p.contribution:+.3f}",
                       fontsize=11, family="DejaVu Sans Mono", transform=ax[4].transAxes, va="center")
            ax[4].text(0.02, 0.22, f"evidence {for_against(p.contribution)} {expl.explained_margin}", fontsize=8,
                       transform=ax[4].transAxes, va="center", color="#555555")
            if r == 0:
                for a, h in zip(ax, heads):
                    a.set_title(h)
        probs = ", ".join(f"{m} {pct(p)}" for m, p in zip(MARGINS, expl.margin_prob))
        title = f"{expl.case_id or 'case'}: predicted {expl.predicted_margin} ({probs})"
        if expl.malignancy_prob is not None:
            title += f"; malignancy {pct(expl.malignancy_prob)}"
        fig.suptitle(title)
        if mappable is not None:
            heat_colourbar(fig, scale, axes[:, :2].ravel().tolist(), "similarity to the prototype,\nthis case",
                           location="bottom")
        else:
            fig.add_axes([0.97, 0.1, 0.01, 0.8]).set_axis_off()   # keep the axes count uniform
        if self_scale is not None:
            heat_colourbar(fig, self_scale, axes[:, 2:4].ravel().tolist(),
                           "similarity to the prototype,\nits own source case", location="bottom")
        else:
            fig.add_axes([0.98, 0.1, 0.01, 0.8]).set_axis_off()
    return fig


SCALE_BARS_MM = (5, 10, 20, 50, 100, 200)
"""The lengths a whole view's scale bar can take: the longest that spans at most a third of the image."""


def scale_bar_mm(view) -> float | None:
    """The length in millimetres of the scale bar of ``view`` (``explain.context.WholeView``), or
    None without a pixel spacing."""
    if view.spacing_mm is None or view.image is None:
        return None
    width_mm = view.full_shape[1] * float(view.spacing_mm[1])
    fits = [b for b in SCALE_BARS_MM if b <= width_mm / 3]
    return float(fits[-1] if fits else SCALE_BARS_MM[0])


def plot_whole_view(view) -> Figure:
    """The whole mammogram of a case (``explain.context.WholeView``), shrunk, at one figure pixel
    per image pixel at 100 dpi: the region of interest boxed in ``BOX_COLOUR``, a white scale bar
    in millimetres (from the DICOM pixel spacing; none without one) in the bottom corner on the
    darker side (the background, away from the breast). Without an image (``view.missing``), a
    small figure that says why, in words."""
    if view.image is None:
        import textwrap

        with _style():
            fig = Figure(figsize=(3.2, 1.0), dpi=100)
            fig.text(0.02, 0.5, textwrap.fill(view.missing, 52), fontsize=7, va="center", ha="left")
        return fig
    img = np.asarray(view.image)
    h, w = img.shape
    with _style():
        fig = Figure(figsize=(w / 100, h / 100), dpi=100)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        ax.set_axis_off()
        f = view.scale
        if view.crop_box is not None:
            top, left, side = (float(v) / f for v in view.crop_box)
            ax.add_patch(Rectangle((left - 0.5, top - 0.5), side, side, fill=False, edgecolor=BOX_COLOUR, lw=1.5))
        bar = scale_bar_mm(view)
        if bar is not None:
            length = bar / float(view.spacing_mm[1]) / f            # shrunken pixels
            bottom = img[int(0.8 * h):]
            left_side = bottom[:, : w // 2].mean() <= bottom[:, w // 2:].mean()
            x0 = 0.06 * w if left_side else 0.94 * w - length
            y = 0.93 * h
            outline = [matplotlib.patheffects.withStroke(linewidth=3, foreground="black")]
            ax.plot([x0, x0 + length], [y, y], color="white", lw=2, solid_capstyle="butt", path_effects=outline)
            ax.text(x0 + length / 2, y - 0.025 * h, f"{bar:g} mm", color="white", ha="center", va="bottom",
                    fontsize=7, path_effects=outline)
    return fig


# ---------------------------------------------------------------------------------------------
# Prototype gallery
# ---------------------------------------------------------------------------------------------


def plot_prototype_gallery(gallery, max_prototypes: int | None = None) -> Figure:
    """Each prototype (its source with the prototype box) beside its nearest training images
    (``explain.prototype_gallery``), the nearest patch boxed. Axes: rows × (1 + n_nearest), plus
    the similarity colour bar when there are neighbours (one scale fitted to all the maps drawn)."""
    entries = list(gallery)[:max_prototypes] if max_prototypes else list(gallery)
    maps = [n.activation for e in entries for n in e.neighbours]
    scale = fit_heat_scale(*maps) if maps else None
    rows = max(1, len(entries))
    cols = 1 + max([len(e.neighbours) for e in entries] + [0])
    with _style():
        fig = Figure(figsize=(1.9 * cols + 0.6, 1.9 * rows + 0.6), layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False)
        mappable = None
        for r, e in enumerate(entries):
            ax = axes[r]
            if e.source_image is not None:
                _show_image(ax[0], e.source_image)
                _box(ax[0], e.box)
            else:
                _clean(ax[0])
            ax[0].set_ylabel(f"prototype {e.index}\n{e.class_name}", color=CLASS_COLOURS[e.class_name])
            if r == 0:
                ax[0].set_title("prototype (source)")
            for k in range(1, cols):
                if k - 1 < len(e.neighbours):
                    n = e.neighbours[k - 1]
                    mappable = _overlay(ax[k], n.image, n.activation, scale)
                    _box(ax[k], n.high_activation_box)
                    ax[k].set_xlabel(f"{n.id}\n{MARGINS[n.label]}, d²={n.sq_distance:.3g}", fontsize=7)
                    if r == 0:
                        ax[k].set_title(f"nearest #{k}")
                else:
                    _clean(ax[k])
        if mappable is not None:
            heat_colourbar(fig, scale, axes[:, 1:].ravel().tolist())
        fig.suptitle("Prototypes and their nearest training images")
    return fig


# ---------------------------------------------------------------------------------------------
# Fig. 5: class activation map vs GradCAM / GradCAM++
# ---------------------------------------------------------------------------------------------


def plot_cam_comparison(run, blackbox, images, masks=None, target_class=None, titles=None) -> Figure:
    """Paper Fig. 5: for each image (rows) the image, IAIA-BL's class activation map (Appendix A
    Eq. 11, for the class IAIA-BL predicts unless ``target_class`` is given), and the black box's
    GradCAM and GradCAM++ for the class it predicts (or ``target_class``). All three maps are
    min-max normalised per case (Eq. 11 by definition; GradCAM and GradCAM++ as computed), so
    they share one scale from 0 to 1 (coloured from ``HEAT_FLOOR``). Axes: rows × 4 plus one colour bar."""
    import torch

    from .baselines import gradcam_both
    from .explain import class_activation_map
    from .predict import as_images

    model = getattr(run, "model", run)
    bb = getattr(blackbox, "model", blackbox)
    x = as_images(images, int(model.cfg.image_size))
    n = x.shape[0]
    with torch.no_grad():
        dev = model.prototypes.device
        logits = model(x.to(dev)).margin_logits.float().cpu()
    cls = logits.argmax(1) if target_class is None else torch.as_tensor(target_class).long().flatten().expand(n)
    cam = class_activation_map(model, x, cls)
    xb = as_images(x, int(bb.cfg.image_size)).to(next(bb.parameters()).device)
    tb = None if target_class is None else cls
    gc, gcpp, bl = gradcam_both(bb, xb, tb)
    gc, gcpp = gc.cpu().numpy(), gcpp.cpu().numpy()
    bcls = bl.argmax(1).cpu().numpy() if bl.shape[1] > 1 else np.zeros(n, int)
    masks_np = None if masks is None else _np(getattr(masks, "lesion_masks", masks))
    with _style():
        fig = Figure(figsize=(9, 2.3 * n + 0.6), layout="constrained")
        axes = fig.subplots(max(1, n), 4, squeeze=False)
        mappable = None
        scale = HeatScale(0.0, HEAT_FLOOR, 1.0)
        for i in range(n):
            ax = axes[i]
            _show_image(ax[0], x[i], (titles[i] if titles else None))
            m = None if masks_np is None else masks_np[i]
            _contour(ax[0], m)
            what = MARGINS[int(cls[i])]
            bwhat = MARGINS[int(bcls[i])] if bb.num_outputs > 1 else "malignant"
            panels = [(cam[i], "IAIA-BL class activation\n(Eq. 11)", what),     # in [0, 1] already
                      (gc[i], "black box: GradCAM", bwhat),
                      (gcpp[i], "black box: GradCAM++", bwhat)]
            for a, (mp, t, c) in zip(ax[1:], panels):
                mappable = _overlay(a, x[i], mp, scale, t if i == 0 else None)
                _contour(a, m)
                a.set_xlabel(f"for {c}", fontsize=8)
        if mappable is not None:
            heat_colourbar(fig, scale, axes.ravel().tolist(), "activation (normalised)")
        fig.suptitle("Where the models look: IAIA-BL vs a black box")
    return fig


# ---------------------------------------------------------------------------------------------
# Fig. 6: activation precision
# ---------------------------------------------------------------------------------------------


def plot_activation_precision(activation_map, relevant_mask, tau: float = 0.95, image=None,
                              title: str | None = None) -> Figure:
    """Paper Fig. 6 / Eq. 9: left, the activation map (over ``image`` if given) with a colour bar
    fitted to it;
    right, its top (1 − τ) pixels (red) over the annotated relevant region (green), titled with
    the activation precision. Axes: 2 plus one colour bar."""
    from .metrics import activation_precision, top_pixels

    amap = _np(activation_map).astype(np.float64).squeeze()
    mask = _np(relevant_mask).astype(np.float64).squeeze()
    if amap.shape != mask.shape:
        raise ValueError(f"activation map {amap.shape} and mask {mask.shape} differ in size")
    ap = activation_precision(amap, mask, tau)
    top = top_pixels(amap, tau)
    with _style():
        fig = Figure(figsize=(7, 3.4), layout="constrained")
        ax = fig.subplots(1, 2)
        scale = fit_heat_scale(amap)
        _overlay(ax[0], np.zeros_like(amap) if image is None else image, amap, scale)
        _contour(ax[0], mask)
        ax[0].set_title("activation map")
        rgb = np.ones(amap.shape + (3,))
        if image is not None:
            g = _grey(image).astype(np.float64)
            g = g / 255.0 if g.max() > 1 else g
            rgb = np.repeat(g[..., None], 3, axis=2) * 0.6 + 0.2
        region, outside, inside = (np.array(matplotlib.colors.to_rgb(c))
                                   for c in (MASK_COLOUR, TOP_COLOUR, TOP_INSIDE_COLOUR))
        rgb[mask > 0.5] = rgb[mask > 0.5] * 0.4 + region * 0.6
        rgb[top] = outside
        rgb[top & (mask > 0.5)] = inside
        ax[1].imshow(np.clip(rgb, 0, 1), interpolation="nearest")
        _clean(ax[1], f"top {100 * (1 - tau):.0f}% of the map vs annotation\n"
                      f"activation precision = {ap:.2f}")
        ax[1].legend(handles=[Patch(color=region, label="annotated region"),
                              Patch(color=outside, label="top pixels outside"),
                              Patch(color=inside, label="top pixels inside")],
                     loc="lower center", bbox_to_anchor=(0.5, -0.28), ncol=2, frameon=False)
        heat_colourbar(fig, scale, ax[0])
        if title:
            fig.suptitle(title)
    return fig


# ---------------------------------------------------------------------------------------------
# Fig. 4: with vs without the fine-annotation loss
# ---------------------------------------------------------------------------------------------


def _top_pam(model, x, cls=None):
    """PAM (N, S, S) of the most activated prototype of the predicted (or given) class."""
    import torch

    from .model import activation_map as upsample

    with torch.no_grad():
        out = model(x.to(model.prototypes.device))
    pred = out.margin_logits.argmax(1) if cls is None else torch.as_tensor(cls).long().to(out.similarity.device)
    own = model.prototype_class[None, :] == pred[:, None]                  # (N, m)
    sim = out.similarity.masked_fill(~own, -float("inf"))
    j = sim.argmax(1)                                                       # (N,)
    maps = out.similarity_maps[torch.arange(x.shape[0]), j]                 # (N, H, W)
    return upsample(maps[:, None].float(), x.shape[-1])[:, 0].cpu().numpy(), j.cpu().numpy(), pred.cpu().numpy()


def plot_fine_vs_nofine(run_fine, run_nofine, images, masks, tau: float = 0.95,
                        names: tuple[str, str] = ("with fine annotation", "without fine annotation"),
                        region: str = "relevant region") -> Figure:
    """Paper Fig. 4: per image (rows) the image with ``masks`` outlined (green), then the
    activation map of the most activated prototype of the predicted class for the model trained
    with the fine-annotation loss and for the one trained without, each titled with the fraction
    of its top activation inside ``masks`` (Eq. 9's activation precision when ``masks`` is the
    relevant region). ``region`` names what ``masks`` outline, in the titles: "relevant region"
    (the paper's figure) or, say, "marker" (chapter 7 measures where the confounder draws the
    evidence; that fraction is not a precision). Axes: rows × 3 plus one colour bar (one scale
    fitted to the maps of both models, so a colour means the same similarity in both columns)."""
    from .predict import as_images
    from .metrics import activation_precision

    mf, mn = getattr(run_fine, "model", run_fine), getattr(run_nofine, "model", run_nofine)
    size = int(mf.cfg.image_size)
    x = as_images(images, size)
    m = _np(getattr(masks, "fine_masks", masks)).astype(np.float64)
    if m.ndim == 4:
        m = m[:, 0]
    if m.ndim == 2:
        m = m[None]
    if m.shape[0] != x.shape[0] or m.shape[-1] != size:
        raise ValueError(f"masks {m.shape} must be one (S, S) mask per image at {size} px")
    results = []
    for model in (mf, mn):
        xi = as_images(x, int(model.cfg.image_size))
        pam, j, pred = _top_pam(model, xi)
        results.append((pam, j, pred, activation_precision(pam, m, tau)))
    n = x.shape[0]
    scale = fit_heat_scale(*(pam for pam, *_ in results))
    with _style():
        fig = Figure(figsize=(7.5, 2.4 * n + 0.6), layout="constrained")
        axes = fig.subplots(max(1, n), 3, squeeze=False)
        mappable = None
        for i in range(n):
            _show_image(axes[i, 0], x[i], f"image, {region}" if i == 0 else None)
            _contour(axes[i, 0], m[i])
            for k, (pam, j, pred, ap) in enumerate(results):
                a = axes[i, k + 1]
                _overlay(a, x[i], pam[i], scale)
                _contour(a, m[i])
                short = "AP" if region == "relevant region" else f"on {region}"
                ap_text = f"{short} = {float(ap[i]):.2f}" if m[i].any() else f"{short} n/a (nothing outlined)"
                a.set_xlabel(f"prototype {int(j[i])} ({MARGINS[int(pred[i])]}), {ap_text}", fontsize=7)
                if i == 0:
                    a.set_title(names[k])
        heat_colourbar(fig, scale, axes.ravel().tolist())
        fig.suptitle(f"Activation of the top prototype; AP = activation precision (τ = {tau})"
                     if region == "relevant region" else
                     f"Activation of the top prototype; on {region} = fraction of its top "
                     f"{100 * (1 - tau):.0f} % on the {region}")
    return fig


# ---------------------------------------------------------------------------------------------
# ROC and training curves
# ---------------------------------------------------------------------------------------------


def plot_roc(labels, probs, class_names: Sequence[str] = MARGINS, title: str | None = None) -> Figure:
    """One-vs-rest ROC curves with their AUCs in the legend. ``labels`` (N,) class indices and
    ``probs`` (N, K); or binary ``labels`` and ``probs`` (N,) (one curve, e.g. malignancy).
    Axes: 1."""
    from sklearn.metrics import roc_auc_score, roc_curve

    y = _np(labels).astype(int).ravel()
    p = _np(probs).astype(np.float64)
    binary = p.ndim == 1
    with _style():
        fig = Figure(figsize=(4.4, 4.2), layout="constrained")
        ax = fig.subplots()
        ax.plot([0, 1], [0, 1], ls="--", color="#aaaaaa", lw=1, label="chance")
        curves = [("malignant" if binary and class_names is MARGINS else
                   (class_names[0] if binary else None), y == 1, p)] if binary else \
            [(class_names[c], y == c, p[:, c]) for c in range(p.shape[1])]
        aucs = []
        for name, pos, score in curves:
            if pos.all() or not pos.any():
                ax.plot([], [], label=f"{name}: AUC undefined (one class only)")
                continue
            fpr, tpr, _ = roc_curve(pos, score)
            auc = roc_auc_score(pos, score)
            aucs.append(auc)
            ax.plot(fpr, tpr, lw=1.8, color=CLASS_COLOURS.get(name), label=f"{name}: AUC {auc:.3f}")
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.set_aspect("equal")
        ax.set_xlabel("false positive rate (1 − specificity)")
        ax.set_ylabel("true positive rate (sensitivity)")
        if title is None:
            title = "ROC" if binary else f"one-vs-rest ROC, mean AUC {np.mean(aucs):.3f}" if aucs else "ROC"
        ax.set_title(title)
        ax.legend(loc="lower right")
    return fig


def _history_rows(history) -> list[dict]:
    if isinstance(history, (str, Path)):
        from .rundir import read_history

        p = Path(history)
        return read_history(p / "history.csv" if p.is_dir() else p)
    history = getattr(history, "history", history)
    rows = []
    for r in history:
        out = {}
        for k, v in dict(r).items():
            if v in ("", None):
                out[k] = None
            elif k == "stage":
                out[k] = str(v)
            else:
                try:
                    out[k] = float(v)
                except (TypeError, ValueError):
                    out[k] = v
        rows.append(out)
    return rows


def plot_history(history) -> Figure:
    """Training curves by stage: left, the loss and its terms (CE, cluster, separation, fine)
    per logged row, coloured by stage (warm-up, joint, push, last layer, ...); right, train and
    validation AUROC. ``history``: a list of dicts (``Run.history``), a run, or a history.csv
    path. Axes: 2."""
    rows = _history_rows(history)
    with _style():
        fig = Figure(figsize=(10, 3.6), layout="constrained")
        ax_loss, ax_auc = fig.subplots(1, 2)
        step = np.arange(1, len(rows) + 1)
        stages = [r.get("stage") or "?" for r in rows]

        def series(key):
            return np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows], dtype=float)

        styles = {"loss": ("-", 2.0), "ce": ("--", 1.2), "clst": (":", 1.2), "sep": ("-.", 1.2),
                  "fine": ((0, (1, 3)), 1.2)}
        for key, (ls, lw) in styles.items():
            y = series(key)
            if np.all(np.isnan(y)) or (key != "loss" and key == "ce" and np.allclose(
                    np.nan_to_num(y), np.nan_to_num(series("loss")))):
                continue
            ax_loss.plot(step, y, ls=ls, lw=lw, color="#333333", label=key)
        loss = series("loss")
        pushes = [i + 1 for i, st in enumerate(stages) if st == "push"]
        for k, x_push in enumerate(pushes):
            for a in (ax_loss, ax_auc):
                a.axvline(x_push, color=STAGE_COLOURS["push"], ls=":", lw=1,
                          label="push (A2)" if k == 0 and a is ax_loss else None)
        for st in dict.fromkeys(stages):
            sel = np.array([s == st for s in stages])
            if st == "push" or np.all(np.isnan(loss[sel])):
                continue
            ax_loss.scatter(step[sel], loss[sel], s=18, zorder=3, color=STAGE_COLOURS.get(st, "#888888"),
                            label=f"stage: {st}")
        positive = [v for k in styles for v in series(k) if np.isfinite(v)]
        if positive and min(positive) > 0 and max(positive) / min(positive) > 50:
            ax_loss.set_yscale("log")          # the terms differ by orders of magnitude
        ax_loss.set_xlabel("logged step (epochs and stages, in order)")
        ax_loss.set_ylabel("loss and its terms (unweighted)")
        ax_loss.set_title("objective by stage")
        ax_loss.legend(ncol=2, fontsize=7)
        for key, colour in (("train_auroc", "#1f78b4"), ("val_auroc", "#e31a1c")):
            y = series(key)
            if not np.all(np.isnan(y)):
                ok = ~np.isnan(y)
                ax_auc.plot(step[ok], y[ok], marker="o", ms=3, color=colour, label=key.replace("_", " "))
        ax_auc.set_ylim(0, 1.02)
        ax_auc.axhline(0.5, color="#aaaaaa", ls="--", lw=1)
        ax_auc.set_xlabel("logged step")
        ax_auc.set_ylabel("AUROC")
        ax_auc.set_title("average margin AUROC")
        ax_auc.legend(handles=ax_auc.get_legend_handles_labels()[0] or
                      [Line2D([], [], color="#aaaaaa", label="no AUROC logged")])
    return fig

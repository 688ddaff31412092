"""The figures' one style and the drawing helpers they share (:mod:`iaiabl_lib.plots`).

Every figure function returns a ``matplotlib.figure.Figure`` built without pyplot (nothing is shown, no
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

__all__ = ["SIMILARITY_CMAP", "HEAT_FLOOR", "SIMILARITY_LABEL", "ACTIVATION_CMAP", "OVERLAY_ALPHA",
           "BOX_COLOUR", "MASK_COLOUR", "TOP_COLOUR", "TOP_INSIDE_COLOUR", "CLASS_COLOURS",
           "STAGE_COLOURS", "STYLE", "figure_png", "HeatScale", "fit_heat_scale", "similarity_rgb",
           "heat_rgba", "draw_heat", "heat_colourbar"]

from contextlib import contextmanager
from dataclasses import dataclass

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle


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
        from ..config import IMAGENET_MEAN, IMAGENET_STD
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

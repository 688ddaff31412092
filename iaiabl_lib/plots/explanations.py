"""Figures that explain one model: Fig. 3 (a case's reasoning) and the whole mammogram with the
region boxed, the prototype gallery, and Fig. 5 (the class activation map beside Grad-CAM and
Grad-CAM++) (Barnett et al. 2021)."""
from __future__ import annotations

__all__ = ["plot_case_explanation", "SCALE_BARS_MM", "scale_bar_mm", "plot_whole_view",
           "plot_prototype_gallery", "plot_cam_comparison"]


import matplotlib
import matplotlib.patheffects
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..config import MARGINS
from ..words import for_against, pct
from .style import (BOX_COLOUR, CLASS_COLOURS, HEAT_FLOOR, HeatScale, fit_heat_scale,
                    heat_colourbar, _box, _clean, _contour, _np, _overlay, _show_image, _style)

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

    from ..baselines import gradcam_both
    from ..explain import class_activation_map
    from ..predict import as_images

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

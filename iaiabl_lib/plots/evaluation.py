"""Figures that evaluate: Fig. 6 (activation precision, Eq. 9), Fig. 4 (with and without the
fine-annotation loss), ROC curves and training curves (Barnett et al. 2021)."""
from __future__ import annotations

__all__ = ["plot_activation_precision", "plot_fine_vs_nofine", "plot_roc", "plot_history"]

from pathlib import Path
from typing import Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ..config import MARGINS
from .style import (CLASS_COLOURS, MASK_COLOUR, STAGE_COLOURS, TOP_COLOUR, TOP_INSIDE_COLOUR,
                    fit_heat_scale, heat_colourbar, _clean, _contour, _grey, _np, _overlay,
                    _show_image, _style)

# ---------------------------------------------------------------------------------------------
# Fig. 6: activation precision
# ---------------------------------------------------------------------------------------------


def plot_activation_precision(activation_map, relevant_mask, tau: float = 0.95, image=None,
                              title: str | None = None) -> Figure:
    """Paper Fig. 6 / Eq. 9: left, the activation map (over ``image`` if given) with a colour bar
    fitted to it;
    right, its top (1 − τ) pixels (red) over the annotated relevant region (green), titled with
    the activation precision. Axes: 2 plus one colour bar."""
    from ..metrics import activation_precision, top_pixels

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

    from ..model import activation_map as upsample

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
    from ..predict import as_images
    from ..metrics import activation_precision

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
        from ..rundir import read_history

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

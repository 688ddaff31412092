"""Eq. 9 (activation precision) on a model's similarity maps: the maps the paper evaluates, the
per-case summary of the (case, map) pairs, and the ceiling a latent grid allows (Barnett et al. 2021,
Eq. 9). Pure functions of arrays, shared by the trainer's validation and ``evaluate``.

    true_class_pams(...)           Eq. 9's maps as the paper evaluates them: every prototype of the TRUE class
    pair_activation_precision(...) Eq. 9 per (case, map) pair, summarised per case
    predicted_class_pam(...)       the explorer's view (most activated prototype of the predicted class);
                                   never in the tables
    single_cell_ceiling(...)       the best Eq. 9 a one-cell map of the latent grid can reach
"""
from __future__ import annotations

import numpy as np
import torch

from .metrics import activation_precision
from .model import activation_map

__all__ = ["predicted_class_pam", "true_class_pams", "pair_activation_precision", "single_cell_ceiling"]


def predicted_class_pam(similarity, similarity_maps, prototype_class, classes, size: int) -> np.ndarray:
    """The PAM of the most activated prototype of each case's (predicted) class: what a reader of
    one case sees first (the explorer's view). Not the paper's Eq. 9 protocol, which averages over
    every prototype of the true class (``true_class_pams``); never used in the tables.

    For case i with class c_i: j* = argmax_{j: class(p_j) = c_i} s_ij (Eq. 2 similarity), and the
    map is PAM_{i,j*}, the similarity map s_{i,j*,l} (Eq. 1) bilinearly upsampled to ``size``
    (``model.activation_map``). A class left without prototypes (after pruning) falls back to the
    most activated prototype overall.

    similarity (N, m), similarity_maps (N, m, H, W), prototype_class (m,), classes (N,)
    -> (N, size, size) float32
    """
    sim = np.asarray(similarity, dtype=np.float64)                          # (N, m)
    pclass = np.asarray(prototype_class.detach().cpu() if hasattr(prototype_class, "detach")
                        else prototype_class).ravel()                       # (m,)
    own = pclass[None, :] == np.asarray(classes).ravel()[:, None]           # (N, m)
    masked = np.where(own, sim, -np.inf)
    best = np.where(own.any(axis=1), masked.argmax(axis=1), sim.argmax(axis=1))   # (N,)
    maps = torch.as_tensor(np.asarray(similarity_maps))                     # (N, m, H, W)
    chosen = maps[torch.arange(maps.shape[0]), torch.as_tensor(best)]       # (N, H, W)
    return activation_map(chosen[:, None].float(), size)[:, 0].numpy()      # (N, S, S)


def true_class_pams(similarity_maps, prototype_class, labels, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 9's maps as the paper evaluates them: the PAM of every prototype of each case's TRUE class.

    For case i with label y_i: PAM_{i,j} for each j with class(p_j) = y_i, the similarity map
    s_{i,j,l} (Eq. 1) bilinearly upsampled to ``size`` (``model.activation_map``). Classes may hold
    different numbers of prototypes after pruning: the P = max_c m_c slots of a case are filled in
    prototype order and ``valid`` marks the used ones (a class left without prototypes gives a case
    with no valid slot, which the metric leaves out).

    similarity_maps (N, m, H, W), prototype_class (m,), labels (N,)
    -> maps (N, P, size, size) float32, valid (N, P) bool
    """
    pclass = np.asarray(prototype_class.detach().cpu() if hasattr(prototype_class, "detach")
                        else prototype_class).ravel()                       # (m,)
    labels = np.asarray(labels).ravel().astype(np.int64)                    # (N,)
    classes = np.unique(np.concatenate([pclass, labels]))
    slots = {int(c): np.flatnonzero(pclass == c) for c in classes}          # class -> prototype indices
    p = max(1, max(len(v) for v in slots.values()))
    index = np.zeros((labels.size, p), dtype=np.int64)                      # (N, P)
    valid = np.zeros((labels.size, p), dtype=bool)
    for i, y in enumerate(labels):
        own = slots[int(y)]
        index[i, :len(own)], valid[i, :len(own)] = own, True
    maps = torch.as_tensor(np.asarray(similarity_maps))                     # (N, m, H, W)
    chosen = maps[torch.arange(maps.shape[0])[:, None], torch.as_tensor(index)]   # (N, P, H, W)
    return activation_map(chosen.float(), size).numpy(), valid              # (N, P, S, S)


def pair_activation_precision(maps, valid, masks, tau: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 9 for each valid (case, map) pair, summarised per case: (mean over the case's valid
    pairs (NaN where none), number of valid pairs). The mean over all pairs is then
    Σ_i n_i·mean_i / Σ_i n_i (``metrics.bootstrap_ci(..., weights=n)``).

    maps (N, P, S, S) or (N, S, S) (one map per case), valid (N, P) bool or None, masks (N, S, S)
    -> per-case mean (N,), count (N,)
    """
    maps = np.asarray(maps)
    if maps.ndim == 3:
        maps = maps[:, None]
    n, p = maps.shape[:2]
    valid = np.ones((n, p), dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    masks = np.asarray(masks)
    ap = np.full((n, p), np.nan)
    if valid.any():
        rows, cols = np.nonzero(valid)
        ap[rows, cols] = activation_precision(maps[rows, cols], masks[rows], tau)
    count = valid.sum(axis=1)
    with np.errstate(invalid="ignore"):
        mean = np.where(count > 0, np.nansum(np.where(valid, ap, 0.0), axis=1) / np.maximum(count, 1), np.nan)
    return mean, count


_TIE_SLOPE = 1e-9
"""Per pixel of distance: orders the zeros of a one-cell map (``single_cell_ceiling``) by their
distance from the cell, far below the smallest footprint value that matters (float64)."""


def single_cell_ceiling(masks, grid: int, tau: float = 0.95) -> np.ndarray:
    """What Eq. 9 can give at the resolution of a ``grid`` × ``grid`` latent grid: for each case, the
    activation precision of the best map that lights one cell (a one-hot similarity map, upsampled
    bilinearly like every PAM, ``model.activation_map``), the best cell chosen per case.

    A prototype that matches one latent patch of the lesion and nothing else makes such a map, so a
    model's Eq. 9 figure is read against this one: below it by little, the grid is the limit; by
    much, the model looks elsewhere. (A map shaped like the lesion itself can score higher; a
    prototype's map at this grid is one patch wide.)

    Outside the cell's bilinear footprint (two cells wide) the upsampled one-hot map is exactly 0.
    Where the top 1 − τ of the pixels outnumber the footprint (the cells small against the image:
    a 16 × 16 grid at 64 px, 9 × 9 at 72 px, the paper's 14 × 14 at 224 px), Eq. 9's threshold
    would then be 0 and keep every pixel (ties at the threshold are kept), giving the lesion's share
    of the image instead of a ceiling. So each map also falls off with the distance from its cell's
    centre, by a slope far below any footprint value (it only orders the zeros): T_τ then takes the
    footprint and the pixels nearest to it, as the map of a prototype that matches one patch best,
    and its neighbours less, would.

    masks (N, S, S) {0, 1} -> (N,) float; NaN for a case with an empty mask
    """
    masks = np.asarray(masks)
    n, size = masks.shape[0], masks.shape[-1]
    cells = torch.eye(grid * grid, dtype=torch.float32).reshape(grid * grid, 1, grid, grid)
    cell_maps = activation_map(cells, size)[:, 0].numpy().astype(np.float64)   # (g², S, S)
    centre = (np.arange(grid) + 0.5) * size / grid - 0.5                   # (g,) cell centres, pixels
    px = np.arange(size, dtype=np.float64)
    dy = px[None, :, None] - np.repeat(centre, grid)[:, None, None]        # (g², S, 1)
    dx = px[None, None, :] - np.tile(centre, grid)[:, None, None]          # (g², 1, S)
    cell_maps -= _TIE_SLOPE * np.sqrt(dy ** 2 + dx ** 2)                   # (g², S, S)
    out = np.full(n, np.nan)
    for i in range(n):
        if masks[i].any():
            mask = np.broadcast_to(masks[i], cell_maps.shape)
            out[i] = float(np.max(activation_precision(cell_maps, mask, tau)))
    return out

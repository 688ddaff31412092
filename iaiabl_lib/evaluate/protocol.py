"""The paper's evaluation protocol on predictions (no model, no files): Eq. 9's maps and pairs, and
every metric of Tables 1-3 from a run's outputs on N cases (Barnett et al. 2021, §4).

    Predictions                    a run's outputs in the form the metrics need
    true_class_pams(...)           Eq. 9's maps as the paper evaluates them: every prototype of the TRUE class
    pair_activation_precision(...) Eq. 9 per (case, map) pair, summarised per case
    predicted_class_pam(...)       the explorer's view (most activated prototype of the predicted class);
                                   never in the tables
    metrics_from_predictions(...)  the metrics.json dictionary (DESIGN.md §5)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..config import MARGINS
from ..metrics import activation_precision, bootstrap_ci, cohen_kappa_ci, malignancy_auroc, margin_auroc
from ..model import activation_map

__all__ = ["METRIC_KEYS", "GRADCAMPP_KEY", "CEILING_KEY", "CI_METHODS", "Predictions", "predicted_class_pam",
           "true_class_pams", "pair_activation_precision", "single_cell_ceiling", "metrics_from_predictions"]

METRIC_KEYS = ("margin_auroc", "kappa", "activation_precision", "malignancy_auroc", "n_test")
"""The keys of DESIGN.md §5 that every metrics.json carries."""

GRADCAMPP_KEY = "activation_precision_gradcampp"
CEILING_KEY = "activation_precision_ceiling"
"""metrics.json: what Eq. 9 gives a map that peaks on the single best cell of the model's latent
grid (``single_cell_ceiling``), beside every activation-precision figure."""

CI_METHODS = {
    "auroc": "DeLong (Sun & Xu 2014 fast algorithm), normal approximation clipped to [0, 1]; "
             "average: joint DeLong covariance of the one-vs-rest AUROCs",
    "kappa": "percentile bootstrap over cases",
    "activation_precision": "mean over cases, percentile bootstrap over cases",
}



# ---------------------------------------------------------------------------------------------
# Predictions: what a run produces on a set of cases
# ---------------------------------------------------------------------------------------------


@dataclass
class Predictions:
    """A run's outputs on N cases, in the form the metrics need."""

    margin_prob: np.ndarray | None          # (N, 3) softmax of the margin logits; None: no margin output
    malignancy_prob: np.ndarray | None      # (N,) or None when the run has no malignancy output
    maps: dict[str, np.ndarray]             # metrics.json key -> (N, S, S) or (N, P, S, S) maps
    map_kind: str                           # what the maps are, for metrics.json "settings"
    map_valid: dict[str, np.ndarray] | None = None   # key -> (N, P) bool: which of the P maps count
    grid: int | None = None                 # side of the model's latent grid (the maps' resolution)


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


def single_cell_ceiling(masks, grid: int, tau: float = 0.95) -> np.ndarray:
    """What Eq. 9 can give at the resolution of a ``grid`` × ``grid`` latent grid: for each case, the
    activation precision of the best map that lights one cell (a one-hot similarity map, upsampled
    bilinearly like every PAM, ``model.activation_map``), the best cell chosen per case.

    A prototype that matches one latent patch of the lesion and nothing else makes such a map, so a
    model's Eq. 9 figure is read against this one: below it by little, the grid is the limit; by
    much, the model looks elsewhere. (A map shaped like the lesion itself can score higher; a
    prototype's map at this grid is one patch wide.)

    masks (N, S, S) {0, 1} -> (N,) float; NaN for a case with an empty mask
    """
    masks = np.asarray(masks)
    n, size = masks.shape[0], masks.shape[-1]
    cells = torch.eye(grid * grid, dtype=torch.float32).reshape(grid * grid, 1, grid, grid)
    cell_maps = activation_map(cells, size)[:, 0].numpy()                   # (g², S, S)
    out = np.full(n, np.nan)
    for i in range(n):
        if masks[i].any():
            mask = np.broadcast_to(masks[i], cell_maps.shape)
            out[i] = float(np.max(activation_precision(cell_maps, mask, tau)))
    return out


# ---------------------------------------------------------------------------------------------
# Metrics from predictions (pure)
# ---------------------------------------------------------------------------------------------


def metrics_from_predictions(labels, malignant, has_fine, lesion_masks, fine_masks,
                             preds: Predictions, n_boot: int = 5000, seed: int = 0,
                             alpha: float = 0.05, tau: float = 0.95) -> tuple[dict, dict[str, np.ndarray]]:
    """All metrics of one run on N cases (no model, no files).

    labels, malignant (N,) int; has_fine (N,) bool; lesion_masks, fine_masks (N, S, S) {0,1}.
    Returns (metrics dict in the metrics.json form, per-case arrays: ``ap_<key>_lesion`` and
    ``ap_<key>_fine`` (the case's mean over its valid maps; NaN where a case has no fine
    annotation) and ``pairs_<key>_lesion`` / ``pairs_<key>_fine`` (how many maps each case has)
    for each map). Activation precision is the mean over all valid (case, map) pairs.
    """
    labels = np.asarray(labels, dtype=np.int64)
    malignant = np.asarray(malignant, dtype=np.int64)
    has_fine = np.asarray(has_fine, dtype=bool)
    n = labels.size
    undefined = {"value": None, "ci_low": None, "ci_high": None}
    out: dict = {"n_test": int(n), "n_fine": int(has_fine.sum())}
    if preds.margin_prob is None:                       # a malignancy-only model
        out["margin_auroc"] = {c: dict(undefined) for c in (*MARGINS, "average", "macro")}
        out["kappa"] = dict(undefined)
    else:
        if preds.margin_prob.shape != (n, len(MARGINS)):
            raise ValueError(f"margin probabilities have shape {preds.margin_prob.shape}, expected "
                             f"({n}, {len(MARGINS)}) for the classes {', '.join(MARGINS)}")
        out["margin_auroc"] = margin_auroc(labels, preds.margin_prob, alpha)
        out["kappa"] = cohen_kappa_ci(labels, preds.margin_prob.argmax(axis=1), n_boot, alpha, seed,
                                      num_classes=len(MARGINS))
    per_case: dict[str, np.ndarray] = {}
    for key in ("activation_precision", *[k for k in preds.maps if k != "activation_precision"]):
        maps = preds.maps.get(key)
        if maps is None:
            out[key] = {"lesion": dict(undefined), "fine": dict(undefined)}
            continue
        valid = (preds.map_valid or {}).get(key)
        ap_lesion, count = pair_activation_precision(maps, valid, lesion_masks, tau)   # (N,), (N,)
        ap_fine, count_fine = np.full(n, np.nan), np.zeros(n, dtype=np.int64)
        if has_fine.any():
            ap_fine[has_fine], count_fine[has_fine] = pair_activation_precision(
                np.asarray(maps)[has_fine], None if valid is None else np.asarray(valid)[has_fine],
                np.asarray(fine_masks)[has_fine], tau)
        out[key] = {"lesion": bootstrap_ci(ap_lesion, n_boot, alpha, seed, weights=count),
                    "fine": bootstrap_ci(ap_fine, n_boot, alpha, seed, weights=count_fine)}
        per_case[f"ap_{key}_lesion"], per_case[f"ap_{key}_fine"] = ap_lesion, ap_fine
        per_case[f"pairs_{key}_lesion"], per_case[f"pairs_{key}_fine"] = count, count_fine
    if preds.grid and preds.maps:                       # the grid's own limit, beside every Eq. 9 figure
        ceil_lesion = single_cell_ceiling(lesion_masks, preds.grid, tau)
        ceil_fine = np.full(n, np.nan)
        if has_fine.any():
            ceil_fine[has_fine] = single_cell_ceiling(np.asarray(fine_masks)[has_fine], preds.grid, tau)
        out[CEILING_KEY] = {"lesion": bootstrap_ci(ceil_lesion, n_boot, alpha, seed),
                            "fine": bootstrap_ci(ceil_fine, n_boot, alpha, seed), "grid": int(preds.grid)}
        per_case["ceiling_lesion"], per_case["ceiling_fine"] = ceil_lesion, ceil_fine
    if preds.malignancy_prob is None:                   # a margin-only black box
        out["malignancy_auroc"] = dict(undefined)
    else:
        out["malignancy_auroc"] = malignancy_auroc(malignant, preds.malignancy_prob, alpha)
    return out, per_case

"""The paper's evaluation protocol on predictions (no model, no files): Eq. 9's maps and pairs, and
every metric of Tables 1-3 from a run's outputs on N cases (Barnett et al. 2021, Tables 1-3).

    Predictions                    a run's outputs in the form the metrics need
    metrics_from_predictions(...)  the metrics.json dictionary (docs/DESIGN.md §5)

Eq. 9's maps and pairs (``true_class_pams``, ``pair_activation_precision``, ``predicted_class_pam``,
``single_cell_ceiling``) live in ``iaiabl_lib.eq9``, which the trainer's validation shares; they are
re-exported here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import MARGINS
from ..eq9 import pair_activation_precision, predicted_class_pam, single_cell_ceiling, true_class_pams
from ..metrics import bootstrap_ci, cohen_kappa_ci, malignancy_auroc, margin_auroc

__all__ = ["METRIC_KEYS", "GRADCAMPP_KEY", "CEILING_KEY", "CI_METHODS", "Predictions", "predicted_class_pam",
           "true_class_pams", "pair_activation_precision", "single_cell_ceiling", "metrics_from_predictions"]

METRIC_KEYS = ("margin_auroc", "kappa", "activation_precision", "malignancy_auroc", "n_test")
"""The keys of docs/DESIGN.md §5 that every metrics.json carries."""

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

"""Evaluation metrics of Barnett et al. (2021): AUROC with DeLong confidence intervals, Cohen's κ,
activation precision (Eq. 9) and a vectorised percentile bootstrap.

Everything here is pure numpy (scipy for ranks and the normal quantile, scikit-learn for the point
values of AUROC and κ): arrays in, numbers out, no model and no files. ``iaiabl_lib.evaluate`` feeds
these functions with a run's predictions.

Summary form. Every "metric with uncertainty" is a dict ``{"value", "ci_low", "ci_high"}`` (the
``metrics.json`` form of docs/DESIGN.md §5); ``None`` where the metric is undefined on the data (an AUROC
with no positive or no negative case, a κ or a mean of zero cases).

AUROC uncertainty: the structural components of DeLong, DeLong & Clarke-Pearson (1988, Biometrics
44:837-845), computed in O(N log N) from midranks as in Sun & Xu (2014, IEEE Signal Processing
Letters 21(11):1389-1393). Confidence intervals use the normal approximation on the AUC scale,
``auc ± z_{1-α/2}·SE``, clipped to [0, 1] (``method="logit"`` gives the logit-scale interval, which
stays inside (0, 1) by construction).
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
from scipy.special import expit, logit
from scipy.stats import norm, rankdata
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from .config import MARGINS

__all__ = ["summary", "structural_components", "delong_covariance", "delong_auc_ci", "delong_test",
           "malignancy_auroc", "class_weights", "margin_auroc", "margin_auroc_test", "bootstrap_ci",
           "cohen_kappa_ci", "top_pixels", "activation_precision"]

Summary = dict  # {"value": float | None, "ci_low": float | None, "ci_high": float | None}

_BOOT_CHUNK = 1 << 22
"""Largest number of resampled indices held at once by the bootstraps (about 32 MB of int64)."""


def summary(value, low, high) -> Summary:
    """The ``{value, ci_low, ci_high}`` dict of ``metrics.json``; plain floats, ``None`` for NaN."""
    def clean(x):
        return None if x is None or not np.isfinite(x) else float(x)
    return {"value": clean(value), "ci_low": clean(low), "ci_high": clean(high)}


def _undefined() -> Summary:
    return summary(None, None, None)


# ---------------------------------------------------------------------------------------------
# AUROC and DeLong
# ---------------------------------------------------------------------------------------------


def _as_binary(y_true) -> np.ndarray:
    y = np.asarray(y_true).ravel()
    values = np.unique(y)
    if not np.all(np.isin(values, [0, 1])):
        raise ValueError(f"binary labels must be 0/1 (or bool), got values {values[:10].tolist()}")
    return y.astype(bool)


def _check_both_classes(pos: np.ndarray, what: str = "labels") -> None:
    m = int(pos.sum())
    if m == 0 or m == pos.size:
        raise ValueError(f"AUROC is undefined: {what} contain only one class "
                         f"({m} positive, {pos.size - m} negative cases)")


def structural_components(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUROCs and per-case DeLong structural components, via midranks (Sun & Xu 2014).

    For AUC k with positives P_k (m_k of them) and negatives N_k (n_k):

        V10_k(i) = (#{j ∈ N_k: s_j < s_i} + ½ #{j ∈ N_k: s_j = s_i}) / n_k     i ∈ P_k
        V01_k(j) = (#{i ∈ P_k: s_i > s_j} + ½ #{i ∈ P_k: s_i = s_j}) / m_k     j ∈ N_k

    computed from midranks: V10 = (T_z − T_x)/n, V01 = 1 − (T_z − T_y)/m, where T_z ranks a case
    among all cases, T_x among the positives, T_y among the negatives. AUC_k is the mean of V10_k
    over P_k (and of V01_k over N_k). The returned component of case i for AUC k is

        ψ_k(i) = (V10_k(i) − AUC_k) / √(m_k (m_k − 1))     if i ∈ P_k
        ψ_k(i) = (V01_k(i) − AUC_k) / √(n_k (n_k − 1))     if i ∈ N_k

    scaled so that ψ ψᵀ is the DeLong covariance: its diagonal is exactly DeLong's
    S10/m + S01/n, and, to first order, AUC_k − E[AUC_k] = Σ_i ψ_k(i) (the influence-function
    expansion of the two-sample U-statistic, Hoeffding/Hájek projection), so Σ_i ψ_k(i) ψ_l(i)
    estimates Cov(AUC_k, AUC_l) over cases sampled i.i.d. This also holds when AUC_k and AUC_l use
    different positive sets on the same cases (the one-vs-rest AUROCs of ``margin_auroc``).

    positive (K, N) or (N,) bool, scores (K, N) -> (aucs (K,), psi (K, N))
    """
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))            # (K, N)
    positive = np.broadcast_to(np.asarray(positive, dtype=bool), scores.shape)
    k, n_cases = scores.shape
    aucs = np.empty(k)
    psi = np.empty((k, n_cases))
    for row in range(k):                                                    # K is small (1-3)
        pos, s = positive[row], scores[row]
        if not np.all(np.isfinite(s)):
            raise ValueError("scores contain NaN or infinite values")
        _check_both_classes(pos)
        m, n = int(pos.sum()), int((~pos).sum())
        tz = rankdata(s)                                                    # midranks, all cases
        tx = rankdata(s[pos])                                               # among positives
        ty = rankdata(s[~pos])                                              # among negatives
        v10 = (tz[pos] - tx) / n                                            # (m,)
        v01 = 1.0 - (tz[~pos] - ty) / m                                     # (n,)
        auc = v10.mean()
        aucs[row] = auc
        # m = 1 (or n = 1): that sample variance is 0/0; DeLong leaves it undefined, use 0.
        psi[row, pos] = (v10 - auc) / np.sqrt(m * (m - 1)) if m > 1 else 0.0
        psi[row, ~pos] = (v01 - auc) / np.sqrt(n * (n - 1)) if n > 1 else 0.0
    return aucs, psi


def delong_covariance(y_true, scores) -> tuple[np.ndarray, np.ndarray]:
    """Fast DeLong (Sun & Xu 2014): AUROCs of K scorings of the same cases and their covariance.

    y_true (N,) 0/1, scores (K, N) or (N,) -> (aucs (K,), cov (K, K))
    """
    aucs, psi = structural_components(_as_binary(y_true), scores)
    return aucs, psi @ psi.T


def _normal_ci(value: float, var: float, alpha: float, method: str = "normal") -> tuple[float, float]:
    """Two-sided 1 − α interval for an AUC-like quantity in [0, 1] from its variance."""
    z = norm.ppf(1 - alpha / 2)
    se = float(np.sqrt(max(var, 0.0)))
    if method == "normal":
        return max(0.0, value - z * se), min(1.0, value + z * se)
    if method == "logit":
        if value <= 0.0 or value >= 1.0:      # the logit interval degenerates at the boundary
            return value, value
        centre, half = logit(value), z * se / (value * (1 - value))          # delta method
        return float(expit(centre - half)), float(expit(centre + half))
    raise ValueError(f"unknown CI method {method!r}; use 'normal' or 'logit'")


def delong_auc_ci(y_true, y_score, alpha: float = 0.05, method: str = "normal") -> tuple[float, float, float]:
    """Binary AUROC with its DeLong (1 − α) confidence interval (docs/DESIGN.md §4).

    Normal approximation on the AUC scale, clipped to [0, 1]; ``method="logit"`` for the
    logit-transformed interval. The AUC itself is scikit-learn's ``roc_auc_score`` (identical to
    the midrank AUC, ties counted ½).

    y_true (N,) 0/1, y_score (N,) -> (auc, low, high)
    """
    y = _as_binary(y_true)
    aucs, cov = delong_covariance(y, np.asarray(y_score, dtype=np.float64)[None, :])
    auc = float(roc_auc_score(y, y_score))
    low, high = _normal_ci(auc, float(cov[0, 0]), alpha, method)
    return auc, low, high


def delong_test(y_true, score_a, score_b) -> float:
    """Paired DeLong test of H0: AUC_a = AUC_b (two scorings of the same cases): two-sided p-value.

    z = (AUC_a − AUC_b) / √(Var_a + Var_b − 2 Cov_ab); p = 1 when both AUCs and the variance of
    the difference are 0 (identical rankings).
    """
    aucs, cov = delong_covariance(y_true, np.vstack([score_a, score_b]))
    diff = aucs[0] - aucs[1]
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    return _z_pvalue(diff, var)


def _z_pvalue(diff: float, var: float) -> float:
    if var <= 1e-15:
        return 1.0 if abs(diff) < 1e-12 else 0.0
    return float(2 * norm.sf(abs(diff) / np.sqrt(var)))


def malignancy_auroc(y_true, y_score, alpha: float = 0.05) -> Summary:
    """AUROC of the malignancy prediction (paper Table 2) with a DeLong CI; undefined (None) when
    the cases are all benign or all malignant.
    y_true (N,) 0/1 malignant, y_score (N,) P(malignant)."""
    try:
        return summary(*delong_auc_ci(y_true, y_score, alpha))
    except ValueError as err:
        if "only one class" in str(err):
            return _undefined()
        raise


def _ovr_components(y_true, y_score, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-vs-rest structural components of every class that has positives and negatives.

    y_true (N,) int, y_score (N, C) -> (defined (C,) bool, aucs (C,) NaN where undefined, psi (C, N))
    """
    y_true = np.asarray(y_true).ravel()
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_score.ndim != 2 or y_score.shape != (y_true.size, num_classes):
        raise ValueError(f"y_score must have shape (N, {num_classes}) = ({y_true.size}, {num_classes}), "
                         f"got {y_score.shape}")
    onehot = y_true[None, :] == np.arange(num_classes)[:, None]             # (C, N)
    defined = onehot.any(axis=1) & (~onehot).any(axis=1)
    aucs = np.full(num_classes, np.nan)
    psi = np.zeros((num_classes, y_true.size))
    if defined.any():
        aucs[defined], psi[defined] = structural_components(onehot[defined], y_score.T[defined])
    return defined, aucs, psi


def class_weights(y_true, num_classes: int) -> np.ndarray:
    """Test-count weights n_c / N of the paper's average AUROC (Table 1). y_true (N,) -> (C,)"""
    counts = np.bincount(np.asarray(y_true, dtype=np.int64).ravel(), minlength=num_classes)[:num_classes]
    return counts / max(counts.sum(), 1)


def margin_auroc(y_true, y_score, alpha: float = 0.05, classes=MARGINS) -> dict[str, Summary]:
    """One-vs-rest AUROC per margin class, their test-count-weighted average (the paper's Table 1)
    and their unweighted (macro) mean, with DeLong CIs.

    Per class c: the binary AUROC of p_c for "class c" vs "any other class", with the DeLong
    interval of ``delong_auc_ci``.

    ``average``: Σ_c w_c AUC_c with w_c = n_c / N, the share of class c among the test cases. This
    is the paper's "average AUROC": only the weighted mean reproduces its Table 1 (ProtoPNet 0.911
    [0.848, 0.974]) from the per-class values of its Appendix B. Its interval is the paper's too:
    the same weighted mean of the per-class DeLong limits, Σ_c w_c [low_c, high_c]. That interval
    treats the three AUROCs' errors as perfectly correlated, so it is wider than the joint interval
    of ``macro`` would be for the same weights (conservative).

    ``macro``: the unweighted mean (1/C) Σ_c AUC_c, the "average" of the authors' training code,
    with the joint-covariance DeLong interval: variance 1ᵀΣ1 / C², where Σ is the C × C covariance
    of the one-vs-rest AUROCs. These share the cases but not the positive sets (a circumscribed
    case is a positive of the first AUROC and a negative of the other two), so Σ is not the "same
    labels, K scorings" covariance of DeLong's paper. Σ is computed from per-case structural
    components (``structural_components``): ψ_c(i) is case i's centred placement value in AUROC c,
    as a positive of c (V10) or as a negative of c (V01), scaled by 1/√(m_c(m_c−1)) or
    1/√(n_c(n_c−1)); AUC_c − E AUC_c ≈ Σ_i ψ_c(i), hence Σ = ψ ψᵀ, i.e.
    var(mean) = Σ_i (mean_c ψ_c(i))². The diagonal of Σ is exactly DeLong's variance of each class
    AUROC; the off-diagonal terms are the covariances of the same first-order expansion with cases
    drawn i.i.d. (class counts random), which is the sampling model of DeLong's variance as well.
    ``tests/test_metrics.py`` checks this variance against a case-level bootstrap.

    If a class has no positive (or no negative) test case its AUROC is undefined (None) and so are
    both averages.

    y_true (N,) int in [0, C), y_score (N, C) -> {"circumscribed": {value, ci_low, ci_high}, ...,
    "average": {...}, "macro": {...}}
    """
    classes = tuple(classes)
    c = len(classes)
    defined, aucs, psi = _ovr_components(y_true, y_score, c)
    # point values from scikit-learn (identical to the midrank AUCs)
    onehot = np.asarray(y_true).ravel()[None, :] == np.arange(c)[:, None]
    out: dict[str, Summary] = {}
    cov = psi @ psi.T                                                        # (C, C)
    for k, name in enumerate(classes):
        if not defined[k]:
            out[name] = _undefined()
            continue
        auc = float(roc_auc_score(onehot[k], np.asarray(y_score, dtype=np.float64)[:, k]))
        out[name] = summary(auc, *_normal_ci(auc, float(cov[k, k]), alpha))
    if defined.all():
        w = class_weights(y_true, c)                                         # (C,)
        per = np.array([[out[n]["value"], out[n]["ci_low"], out[n]["ci_high"]] for n in classes])  # (C, 3)
        out["average"] = summary(*(w @ per))
        mean = float(per[:, 0].mean())
        var = float(cov.sum()) / c**2                                        # 1ᵀΣ1 / C²
        out["macro"] = summary(mean, *_normal_ci(mean, var, alpha))
    else:
        out["average"] = _undefined()
        out["macro"] = _undefined()
    return out


def margin_auroc_test(y_true, y_score_a, y_score_b, classes=MARGINS) -> dict[str, float | None]:
    """Paired DeLong tests between two models' margin AUROCs on the same cases: two-sided p-value
    per class, for the weighted ``average`` and for the ``macro`` mean (the variance of a difference
    of averages from the joint structural components, as in ``margin_auroc``: w·ψ_a − w·ψ_b per
    case). None where a class AUROC is undefined.
    """
    c = len(tuple(classes))
    def_a, auc_a, psi_a = _ovr_components(y_true, y_score_a, c)
    _, auc_b, psi_b = _ovr_components(y_true, y_score_b, c)
    d = psi_a - psi_b                                                        # (C, N)
    out: dict[str, float | None] = {}
    for k, name in enumerate(classes):
        out[name] = _z_pvalue(auc_a[k] - auc_b[k], float(d[k] @ d[k])) if def_a[k] else None
    if def_a.all():
        for key, w in (("average", class_weights(y_true, c)), ("macro", np.full(c, 1.0 / c))):
            dw = w @ d                                                       # (N,)
            out[key] = _z_pvalue(float(w @ (auc_a - auc_b)), float(dw @ dw))
    else:
        out["average"] = out["macro"] = None
    return out


# ---------------------------------------------------------------------------------------------
# Bootstrap and Cohen's kappa
# ---------------------------------------------------------------------------------------------


def _bootstrap_index_chunks(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """All n_boot resamples of range(n) with replacement, in chunks of (B_chunk, n) index arrays
    (one chunk, i.e. all at once, unless n_boot · n exceeds ``_BOOT_CHUNK``). The same seed gives
    the same resamples whatever the chunking."""
    rng = np.random.default_rng(seed)
    rows = max(1, _BOOT_CHUNK // max(n, 1))
    done = 0
    while done < n_boot:
        b = min(rows, n_boot - done)
        yield rng.integers(0, n, size=(b, n))
        done += b


def _percentile_ci(stats: np.ndarray, alpha: float) -> tuple[float, float]:
    stats = stats[np.isfinite(stats)]
    if stats.size == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(stats, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


def bootstrap_ci(values, n_boot: int = 5000, alpha: float = 0.05, seed: int = 0,
                 statistic: Callable[..., np.ndarray] = np.mean, weights=None) -> Summary:
    """Percentile bootstrap CI of ``statistic`` over cases, vectorised.

    ``statistic(array, axis=-1)`` must reduce the last axis (numpy reductions do: np.mean,
    np.median, ...): it is applied once to a (B, n) array of all resamples. Non-finite values
    (NaN) are dropped first. Empty input gives ``None`` everywhere.

    ``weights`` (n,) ≥ 0: the weighted mean Σ w x / Σ w instead of ``statistic``, resampled by case
    (e.g. a per-case mean over w_i pairs, so that the value is the mean over all pairs, Eq. 9's
    protocol in ``evaluate``). Cases with weight 0 or a NaN value are dropped.

    values (n,) -> {value, ci_low, ci_high}
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64).ravel()
        if w.shape != x.shape or (w < 0).any():
            raise ValueError(f"weights must be {x.shape} and non-negative, got {w.shape}")
        keep = np.isfinite(x) & (w > 0)
        x, w = x[keep], w[keep]
        if x.size == 0:
            return _undefined()
        value = float((w * x).sum() / w.sum())
        stats = np.concatenate([(w[idx] * x[idx]).sum(axis=-1) / w[idx].sum(axis=-1)
                                for idx in _bootstrap_index_chunks(x.size, n_boot, seed)])
        return summary(value, *_percentile_ci(stats, alpha))
    x = x[np.isfinite(x)]
    if x.size == 0:
        return _undefined()
    value = float(statistic(x, axis=-1))
    stats = np.concatenate([np.asarray(statistic(x[idx], axis=-1), dtype=np.float64)
                            for idx in _bootstrap_index_chunks(x.size, n_boot, seed)])
    return summary(value, *_percentile_ci(stats, alpha))


def _kappa_from_confusion(conf: np.ndarray) -> np.ndarray:
    """Unweighted Cohen's κ = (p_o − p_e) / (1 − p_e) of confusion matrices.

    conf (..., C, C) counts -> (...,), NaN where p_e = 1 (κ undefined)
    """
    conf = conf.astype(np.float64)
    total = conf.sum(axis=(-2, -1))
    po = np.trace(conf, axis1=-2, axis2=-1) / total
    pe = (conf.sum(axis=-1) * conf.sum(axis=-2)).sum(axis=-1) / total**2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pe < 1, (po - pe) / (1 - pe), np.nan)


def cohen_kappa_ci(y_true, y_pred, n_boot: int = 5000, alpha: float = 0.05, seed: int = 0,
                   num_classes: int | None = None) -> Summary:
    """Unweighted Cohen's κ between true and predicted classes, with a percentile bootstrap CI.

    The value is scikit-learn's ``cohen_kappa_score``. The bootstrap is vectorised: all resample
    index arrays are drawn at once, each resample's confusion matrix comes from one ``np.bincount``
    over codes b·C² + true·C + pred, and κ is computed from the (B, C, C) stack. Resamples where κ
    is undefined (every case in one class for both raters) are left out of the percentiles.

    y_true, y_pred (N,) ints in [0, C) -> {value, ci_low, ci_high}
    """
    t = np.asarray(y_true).ravel().astype(np.int64)
    p = np.asarray(y_pred).ravel().astype(np.int64)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.size} vs {p.size}")
    if t.size == 0:
        return _undefined()
    c = int(num_classes if num_classes is not None else max(t.max(), p.max()) + 1)
    if t.min() < 0 or p.min() < 0 or max(t.max(), p.max()) >= c:
        raise ValueError(f"class indices must lie in [0, {c})")
    with np.errstate(invalid="ignore", divide="ignore"):
        value = float(cohen_kappa_score(t, p, labels=np.arange(c)))
    codes = t * c + p                                                       # (N,)
    kappas = []
    for idx in _bootstrap_index_chunks(t.size, n_boot, seed):               # idx (B, N)
        b = idx.shape[0]
        flat = (np.arange(b)[:, None] * c * c + codes[idx]).ravel()
        conf = np.bincount(flat, minlength=b * c * c).reshape(b, c, c)      # (B, C, C)
        kappas.append(_kappa_from_confusion(conf))
    return summary(value, *_percentile_ci(np.concatenate(kappas), alpha))


# ---------------------------------------------------------------------------------------------
# Activation precision (Eq. 9)
# ---------------------------------------------------------------------------------------------


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):                                                # torch.Tensor
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


def top_pixels(maps, tau: float = 0.95) -> np.ndarray:
    """T_τ of Eq. 9: in each map (the last two axes, (..., H, W)), the pixels at or above that map's
    τ-quantile (numpy's linear-interpolation quantile in float64; ties at the threshold are all
    kept). numpy or torch in, bool numpy array of the same shape out. The one selection of "the
    most activated pixels": Eq. 9 (:func:`activation_precision`), its figure, the explorer's "most
    active N %" and the box around a prototype's self-activation all call it."""
    a = _to_numpy(maps).astype(np.float64)
    if a.ndim < 2:
        raise ValueError(f"top_pixels: maps of shape {a.shape}; expected (..., H, W)")
    flat = a.reshape(-1, a.shape[-2] * a.shape[-1])                         # (N, H·W)
    thr = np.quantile(flat, tau, axis=1, keepdims=True)                     # (N, 1)
    return (flat >= thr).reshape(a.shape)


def activation_precision(activation_map, relevant_mask, tau: float = 0.95):
    """Eq. 9: the fraction of a map's most activated pixels that lie in the relevant region.

        AP = Σ (T_τ(PAM) ⊙ m) / Σ T_τ(PAM)

    T_τ keeps the pixels of each map at or above that map's τ-quantile (τ = 0.95: the top 5 %;
    numpy's linear-interpolation quantile, so a 10 × 10 map with distinct values keeps exactly its
    5 largest pixels; ties at the threshold are all kept). ``relevant_mask`` is 1 on the relevant
    region (lesion or fine annotation), 0 elsewhere: the opposite of the paper's m_i convention
    (docs/DESIGN.md §2), so no inversion is needed here.

    activation_map (S, S) -> float, or (N, S, S) -> (N,) array; numpy or torch. relevant_mask of
    the same shape ((N, 1, S, S) masks from ``to_tensors`` are accepted, the channel is dropped).
    """
    amap = _to_numpy(activation_map).astype(np.float64)
    mask = _to_numpy(relevant_mask).astype(np.float64)
    if mask.ndim == 4 and mask.shape[1] == 1:
        mask = mask[:, 0]
    if amap.ndim == 4 and amap.shape[1] == 1:
        amap = amap[:, 0]
    single = amap.ndim == 2
    if single:
        amap, mask = amap[None], mask[None] if mask.ndim == 2 else mask
    if amap.ndim != 3 or mask.shape != amap.shape:
        raise ValueError(f"activation map {tuple(_to_numpy(activation_map).shape)} and relevant mask "
                         f"{tuple(_to_numpy(relevant_mask).shape)} must both be (S, S) or (N, S, S) "
                         "of the same size; upsample the map to the mask size first "
                         "(iaiabl_lib.model.activation_map)")
    top = top_pixels(amap, tau).reshape(amap.shape[0], -1)                  # T_τ, (N, S·S) bool
    ap = (top * mask.reshape(mask.shape[0], -1)).sum(axis=1) / top.sum(axis=1)
    return float(ap[0]) if single else ap

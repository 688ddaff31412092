"""Tests of iaiabl_lib.metrics: DeLong AUROC (against published values and a brute-force O(m·n)
implementation of DeLong et al. 1988), the one-vs-rest average, Cohen's κ, activation precision
(Eq. 9) and the vectorised bootstrap."""
from __future__ import annotations


import numpy as np
import pytest
import torch
from scipy.stats import norm
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from iaiabl_lib.metrics import (_bootstrap_index_chunks, _kappa_from_confusion, activation_precision,
                                bootstrap_ci, cohen_kappa_ci, delong_auc_ci, delong_covariance,
                                delong_test, malignancy_auroc, margin_auroc, margin_auroc_test,
                                structural_components)

# Hanley & McNeil (1982), Radiology 143:29-36, Table I: 109 CT images rated 1 (definitely normal)
# to 5 (definitely abnormal) by one radiologist; 58 normal, 51 abnormal.
HM_NORMAL = (33, 6, 6, 11, 2)
HM_ABNORMAL = (3, 2, 2, 11, 33)


def hanley_mcneil():
    ratings = np.arange(1, 6)
    y = np.r_[np.zeros(58, int), np.ones(51, int)]
    s = np.r_[np.repeat(ratings, HM_NORMAL), np.repeat(ratings, HM_ABNORMAL)].astype(float)
    return y, s


def brute_force_delong(y, scores):
    """DeLong, DeLong & Clarke-Pearson (1988), structural components with explicit double loops
    over positive × negative pairs: psi(X, Y) = 1 if Y < X, 1/2 if Y = X, else 0."""
    scores = np.atleast_2d(scores)
    k = scores.shape[0]
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    m, n = len(pos), len(neg)
    v10, v01 = np.zeros((k, m)), np.zeros((k, n))
    for r in range(k):
        for a, i in enumerate(pos):
            for b, j in enumerate(neg):
                x, yy = scores[r, i], scores[r, j]
                psi = 1.0 if yy < x else (0.5 if yy == x else 0.0)
                v10[r, a] += psi / n
                v01[r, b] += psi / m
    theta = v10.mean(axis=1)
    s10 = np.cov(v10) if k > 1 else np.atleast_2d(np.var(v10, ddof=1))
    s01 = np.cov(v01) if k > 1 else np.atleast_2d(np.var(v01, ddof=1))
    return theta, s10 / m + s01 / n


# --- DeLong -----------------------------------------------------------------------------------


def test_hanley_mcneil_published_values():
    """AUC 0.893 and its SE 0.032 (Hanley & McNeil's own formula) as published; DeLong's SE 0.0307
    with the 95 % normal CI 0.83295-0.95339, the output of Stata's `roctab disease rating` on the
    same data (`webuse hanley`, [R] roctab manual example; roctab's default SE is DeLong's)."""
    y, s = hanley_mcneil()
    auc, low, high = delong_auc_ci(y, s)
    assert auc == pytest.approx(roc_auc_score(y, s), abs=1e-15)
    assert round(auc, 4) == 0.8932
    # Hanley-McNeil (1982) SE formula on these counts: their published 0.032 (checks the data)
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    se_hm = np.sqrt((auc * (1 - auc) + 50 * (q1 - auc**2) + 57 * (q2 - auc**2)) / (51 * 58))
    assert round(se_hm, 3) == 0.032
    # DeLong
    _, cov = delong_covariance(y, s)
    assert round(float(np.sqrt(cov[0, 0])), 4) == 0.0307
    assert (round(low, 5), round(high, 5)) == (0.83295, 0.95339)
    # and the brute-force definition agrees to rounding error
    theta, cov_bf = brute_force_delong(y, s)
    assert theta[0] == pytest.approx(auc, abs=1e-12)
    assert cov[0, 0] == pytest.approx(cov_bf[0, 0], rel=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_delong_matches_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = 37
    y = (rng.random(n) < 0.4).astype(int)
    y[:2] = (0, 1)
    scores = np.vstack([rng.integers(0, 6, n), rng.normal(size=n) + y, np.round(rng.random(n), 1)])
    aucs, cov = delong_covariance(y, scores)
    theta, cov_bf = brute_force_delong(y, scores)
    np.testing.assert_allclose(aucs, theta, atol=1e-12)
    np.testing.assert_allclose(cov, cov_bf, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(aucs, [roc_auc_score(y, s) for s in scores], atol=1e-12)


def test_delong_test_paired():
    rng = np.random.default_rng(3)
    y = np.r_[np.zeros(40, int), np.ones(30, int)]
    a = rng.normal(size=70) + 1.2 * y
    b = a + rng.normal(scale=1.0, size=70)
    assert delong_test(y, a, a) == 1.0
    theta, cov = brute_force_delong(y, np.vstack([a, b]))
    z = (theta[0] - theta[1]) / np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    assert delong_test(y, a, b) == pytest.approx(2 * norm.sf(abs(z)), rel=1e-9)
    assert delong_test(y, a, b) == pytest.approx(delong_test(y, b, a), rel=1e-12)


def test_delong_ci_edges_and_logit():
    y = np.r_[np.zeros(5, int), np.ones(5, int)]
    perfect = np.arange(10.0)
    assert delong_auc_ci(y, perfect) == (1.0, 1.0, 1.0)
    y2, s2 = hanley_mcneil()
    auc, low, high = delong_auc_ci(y2, s2, method="logit")
    assert 0 < low < auc < high < 1
    with pytest.raises(ValueError, match="only one class"):
        delong_auc_ci(np.ones(4, int), np.arange(4.0))
    with pytest.raises(ValueError, match="0/1"):
        delong_auc_ci(np.array([0, 1, 2]), np.arange(3.0))


def test_malignancy_auroc_summary():
    y, s = hanley_mcneil()
    out = malignancy_auroc(y, s)
    assert set(out) == {"value", "ci_low", "ci_high"}
    assert out["ci_low"] <= out["value"] <= out["ci_high"]
    assert malignancy_auroc(np.zeros(5, int), np.arange(5.0)) == {"value": None, "ci_low": None, "ci_high": None}


# --- one-vs-rest margin AUROC and its average ---------------------------------------------------


def three_class_data(rng, n=150, signal=1.0):
    labels = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3))
    logits[np.arange(n), labels] += signal
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return labels, probs


def brute_force_ovr_components(labels, probs):
    """Per-case components of each one-vs-rest AUROC with explicit loops (independent of the
    midrank code): psi_c(i) = (V10_c(i) - A_c)/sqrt(m(m-1)) for positives, (V01 - A)/sqrt(n(n-1))
    for negatives."""
    n_cases, c = probs.shape
    psi = np.zeros((c, n_cases))
    for k in range(c):
        pos = [i for i in range(n_cases) if labels[i] == k]
        neg = [i for i in range(n_cases) if labels[i] != k]
        m, n = len(pos), len(neg)
        v = np.zeros(n_cases)
        for i in pos:
            for j in neg:
                h = 1.0 if probs[j, k] < probs[i, k] else (0.5 if probs[j, k] == probs[i, k] else 0.0)
                v[i] += h / n
                v[j] += h / m
        auc = v[pos].mean()
        psi[k, pos] = (v[pos] - auc) / np.sqrt(m * (m - 1))
        psi[k, neg] = (v[neg] - auc) / np.sqrt(n * (n - 1))
    return psi


def test_margin_auroc_per_class_and_average_variance():
    rng = np.random.default_rng(0)
    labels, probs = three_class_data(rng, n=60)
    out = margin_auroc(labels, probs)
    assert list(out) == ["circumscribed", "indistinct", "spiculated", "average", "macro"]
    z = norm.ppf(0.975)
    per_class = ["circumscribed", "indistinct", "spiculated"]
    for k, name in enumerate(per_class):
        assert out[name]["value"] == pytest.approx(roc_auc_score(labels == k, probs[:, k]), abs=1e-12)
        # each class's CI is exactly the binary DeLong CI
        assert (out[name]["value"], out[name]["ci_low"], out[name]["ci_high"]) == pytest.approx(
            delong_auc_ci(labels == k, probs[:, k]), abs=1e-12)
    # the paper's average is scikit-learn's prevalence-weighted one-vs-rest AUROC; macro the plain mean
    assert out["average"]["value"] == pytest.approx(
        roc_auc_score(labels, probs, multi_class="ovr", average="weighted"), abs=1e-12)
    assert out["macro"]["value"] == pytest.approx(
        roc_auc_score(labels, probs, multi_class="ovr", average="macro"), abs=1e-12)
    assert out["average"]["value"] != pytest.approx(out["macro"]["value"], abs=1e-6)   # unequal classes
    # the paper's interval: the same weighted mean of the per-class DeLong limits
    w = np.bincount(labels, minlength=3) / labels.size
    for key in ("ci_low", "ci_high"):
        assert out["average"][key] == pytest.approx(sum(w[k] * out[n][key] for k, n in enumerate(per_class)))
    psi = brute_force_ovr_components(labels, probs)
    var_avg = float((psi.mean(axis=0) ** 2).sum())            # 1ᵀ Σ 1 / 9 with Σ = ψ ψᵀ
    assert out["macro"]["ci_high"] - out["macro"]["value"] == pytest.approx(z * np.sqrt(var_avg), rel=1e-9)
    _, psi_fast = structural_components(labels[None, :] == np.arange(3)[:, None], probs.T)
    np.testing.assert_allclose(psi_fast, psi, atol=1e-13)


def test_margin_average_variance_matches_simulation():
    """The DeLong-style SE of the average one-vs-rest AUROC against its Monte Carlo SD (300
    independent test sets of 150 cases from one model): within 15 %."""
    rng = np.random.default_rng(1)
    averages, variances = [], []
    for _ in range(300):
        labels, probs = three_class_data(rng, n=150, signal=1.0)
        aucs, psi = structural_components(labels[None, :] == np.arange(3)[:, None], probs.T)
        averages.append(aucs.mean())
        variances.append((psi.mean(axis=0) ** 2).sum())
    sd_mc, se_delong = np.std(averages, ddof=1), np.sqrt(np.mean(variances))
    assert se_delong == pytest.approx(sd_mc, rel=0.15)
    # ignoring the (negative) correlations between the three AUROCs would be clearly off
    naive = []
    for _ in range(50):
        labels, probs = three_class_data(rng, n=150, signal=1.0)
        _, psi = structural_components(labels[None, :] == np.arange(3)[:, None], probs.T)
        naive.append((psi**2).sum() / 9)
    assert abs(np.sqrt(np.mean(naive)) - sd_mc) > abs(se_delong - sd_mc)


def test_margin_auroc_missing_class_is_undefined():
    rng = np.random.default_rng(2)
    labels, probs = three_class_data(rng, n=30)
    labels[labels == 2] = 1
    out = margin_auroc(labels, probs)
    assert out["spiculated"] == {"value": None, "ci_low": None, "ci_high": None}
    assert out["average"]["value"] is None and out["macro"]["value"] is None
    assert out["circumscribed"]["value"] is not None
    with pytest.raises(ValueError, match="shape"):
        margin_auroc(labels, probs[:, :2])


def test_margin_auroc_test():
    rng = np.random.default_rng(4)
    labels, probs = three_class_data(rng, n=120)
    other = probs + rng.normal(scale=0.5, size=probs.shape)
    same = margin_auroc_test(labels, probs, probs)
    assert all(p == 1.0 for p in same.values())
    p = margin_auroc_test(labels, probs, other)
    assert set(p) == {"circumscribed", "indistinct", "spiculated", "average", "macro"}
    assert all(0 <= v <= 1 for v in p.values())
    for k, name in enumerate(["circumscribed", "indistinct", "spiculated"]):
        # per class it is the binary paired DeLong test
        assert p[name] == pytest.approx(delong_test(labels == k, probs[:, k], other[:, k]), rel=1e-9)


# --- Cohen's kappa ------------------------------------------------------------------------------


def confusion_to_pairs(conf):
    t, p = [], []
    for i in range(conf.shape[0]):
        for j in range(conf.shape[1]):
            t += [i] * conf[i, j]
            p += [j] * conf[i, j]
    return np.array(t), np.array(p)


def test_kappa_hand_computed():
    # rows: truth, columns: prediction. p_o = 30/40; row sums 13, 13, 14; column sums 14, 11, 15;
    # p_e = (13·14 + 13·11 + 14·15) / 40² = 535/1600; κ = (1200 − 535) / (1600 − 535) = 133/213
    conf = np.array([[10, 2, 1], [3, 8, 2], [1, 1, 12]])
    t, p = confusion_to_pairs(conf)
    out = cohen_kappa_ci(t, p, n_boot=2000, seed=0)
    assert out["value"] == pytest.approx(133 / 213, abs=1e-12)
    assert _kappa_from_confusion(conf) == pytest.approx(133 / 213, abs=1e-12)
    assert out["ci_low"] <= out["value"] <= out["ci_high"]
    assert out["ci_high"] - out["ci_low"] < 0.6


def test_kappa_bootstrap_is_the_resampled_sklearn_kappa_and_reproducible():
    rng = np.random.default_rng(5)
    t = rng.integers(0, 3, 150)
    p = np.where(rng.random(150) < 0.6, t, rng.integers(0, 3, 150))
    # the bincount confusion matrices reproduce sklearn on the same resamples
    idx = next(_bootstrap_index_chunks(150, 20, seed=7))
    codes = t * 3 + p
    conf = np.bincount((np.arange(20)[:, None] * 9 + codes[idx]).ravel(), minlength=180).reshape(20, 3, 3)
    expected = [cohen_kappa_score(t[i], p[i], labels=[0, 1, 2]) for i in idx]
    np.testing.assert_allclose(_kappa_from_confusion(conf), expected, atol=1e-12)
    a = cohen_kappa_ci(t, p, seed=7)
    assert a == cohen_kappa_ci(t, p, seed=7)
    assert a != cohen_kappa_ci(t, p, seed=8)
    assert a["ci_low"] < a["value"] < a["ci_high"]


# --- activation precision (Eq. 9) ---------------------------------------------------------------


def hand_map():
    """10 × 10 map with distinct values 0..99 scattered; its top 5 % (5 pixels) are 95..99."""
    rng = np.random.default_rng(0)
    amap = rng.permutation(100).astype(float).reshape(10, 10)
    top = np.argwhere(amap >= 95)                          # the 5 pixels T_0.95 keeps
    return amap, top


def test_activation_precision_hand_made():
    amap, top = hand_map()
    assert len(top) == 5
    mask = np.zeros((10, 10))
    for r, c in top[:3]:                                   # 3 of the 5 top pixels are relevant
        mask[r, c] = 1
    mask[amap < 50] = 1                                    # lots of relevant low-activation pixels
    assert activation_precision(amap, mask) == pytest.approx(3 / 5)
    assert activation_precision(amap, np.ones((10, 10))) == 1.0
    assert activation_precision(amap, np.zeros((10, 10))) == 0.0
    assert isinstance(activation_precision(amap, mask), float)
    # τ = 0.9 keeps the top 10 pixels (90..99), 3 of which are relevant here
    assert activation_precision(amap, mask, tau=0.9) == pytest.approx(3 / 10)


def test_activation_precision_batched_torch_and_ties():
    amap, top = hand_map()
    mask = np.zeros((10, 10))
    mask[tuple(top[0])] = 1
    maps = np.stack([amap, amap, np.full((10, 10), 2.0)])          # (3, 10, 10)
    masks = np.stack([mask, 1 - mask, np.eye(10)])
    expected = [1 / 5, 4 / 5, 10 / 100]                            # constant map: ties keep all pixels
    np.testing.assert_allclose(activation_precision(maps, masks), expected)
    got = activation_precision(torch.from_numpy(maps), torch.from_numpy(masks)[:, None])  # (N,1,S,S) mask
    assert isinstance(got, np.ndarray) and got.shape == (3,)
    np.testing.assert_allclose(got, expected)
    with pytest.raises(ValueError, match="same size"):
        activation_precision(maps, masks[:, :5])


# --- bootstrap ----------------------------------------------------------------------------------


def test_bootstrap_ci_reproducible_and_equal_to_a_loop():
    rng = np.random.default_rng(6)
    x = rng.random(150)
    out = bootstrap_ci(x, n_boot=500, seed=3)
    assert out == bootstrap_ci(x, n_boot=500, seed=3)
    assert out != bootstrap_ci(x, n_boot=500, seed=4)
    assert out["value"] == pytest.approx(x.mean())
    assert out["ci_low"] < out["value"] < out["ci_high"]
    idx = next(_bootstrap_index_chunks(150, 500, seed=3))
    loop = [x[i].mean() for i in idx]
    assert (out["ci_low"], out["ci_high"]) == pytest.approx(tuple(np.percentile(loop, [2.5, 97.5])))
    med = bootstrap_ci(x, n_boot=200, statistic=np.median)
    assert med["value"] == pytest.approx(np.median(x))
    assert bootstrap_ci([], n_boot=10) == {"value": None, "ci_low": None, "ci_high": None}
    assert bootstrap_ci([np.nan, 1.0, 1.0], n_boot=10)["value"] == 1.0


def test_bootstrap_chunks_do_not_change_the_resamples(monkeypatch):
    import iaiabl_lib.metrics as metrics
    x = np.random.default_rng(8).random(50)
    whole = bootstrap_ci(x, n_boot=300, seed=1)
    monkeypatch.setattr(metrics, "_BOOT_CHUNK", 50 * 7)            # 7 resamples per chunk
    assert bootstrap_ci(x, n_boot=300, seed=1) == whole


def test_bootstrap_weighted_mean_is_the_mean_over_pairs():
    """weights = pairs per case: the value is the mean over all pairs, the resampling is by case."""
    rng = np.random.default_rng(5)
    counts = rng.integers(0, 4, 40)
    pairs = [rng.random(c) for c in counts]
    means = np.array([p.mean() if len(p) else np.nan for p in pairs])
    out = bootstrap_ci(means, n_boot=2000, seed=1, weights=counts)
    assert out["value"] == pytest.approx(np.concatenate(pairs).mean(), abs=1e-12)
    assert out["ci_low"] < out["value"] < out["ci_high"]
    # equal weights: the plain mean and the same resamples as the unweighted bootstrap
    flat = rng.random(30)
    assert bootstrap_ci(flat, n_boot=500, seed=2, weights=np.ones(30)) == pytest.approx(
        bootstrap_ci(flat, n_boot=500, seed=2))
    with pytest.raises(ValueError, match="non-negative"):
        bootstrap_ci(flat, weights=-np.ones(30))


def test_top_pixels_is_the_one_eq9_selection():
    """metrics.top_pixels (T_τ of Eq. 9): per map, the pixels at or above its τ-quantile; a 10 × 10
    map of distinct values keeps exactly its 5 largest at τ = 0.95; ties at the threshold are all
    kept; torch in, same answer; and the explorer's "most active N %", the figure and the
    self-activation box select through it."""
    import torch

    from iaiabl_lib.metrics import top_pixels
    from iaiabl_lib.push import high_activation_box
    from iaiabl_lib.widgets.precision import top_pixels as explorer_top

    rng = np.random.default_rng(0)
    a = rng.permutation(100).reshape(10, 10).astype(float)
    top = top_pixels(a, 0.95)
    assert top.sum() == 5 and set(a[top]) == {95, 96, 97, 98, 99}
    maps = np.stack([a, -a])                                              # per-map thresholds
    both = top_pixels(maps, 0.95)
    assert both.shape == (2, 10, 10) and both[0].sum() == both[1].sum() == 5
    assert set(maps[1][both[1]]) == {0, -1, -2, -3, -4}
    assert np.array_equal(top_pixels(torch.as_tensor(maps), 0.95), both)
    tied = np.zeros((10, 10))
    tied[0] = 1.0                                      # ten pixels tied at the threshold: all kept
    assert top_pixels(tied, 0.95).sum() == 10
    assert np.array_equal(explorer_top(a, 5), top)
    box = high_activation_box(torch.as_tensor(a)[None], 95.0)[0].tolist()
    ys, xs = np.nonzero(top & (a == a.max()))
    assert box[0] <= ys[0] < box[2] and box[1] <= xs[0] < box[3]
    with pytest.raises(ValueError, match="expected"):
        top_pixels(np.zeros(5))

"""Stage B (Barnett et al. 2021, Eq. 10): the malignancy head h2, a logistic regression of
the pathology on the three margin logits of h1, fitted alone (scikit-learn) with everything else
frozen. Stage B never returns to stage A.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..config import MARGINS
from ..model import IAIABL

__all__ = ["malignancy_equation", "fit_malignancy_head"]


def malignancy_equation(coef: np.ndarray, intercept: float, scale: np.ndarray) -> str:
    """Eq. 10 as text: P(malignant) = σ(a·circumscribed + b·indistinct + c·spiculated + d)."""
    terms = " ".join(f"{'+' if a >= 0 else '−'} {abs(a):.3f}·{name}" for a, name in zip(coef, MARGINS))
    terms = terms[2:] if terms.startswith("+ ") else "−" + terms[2:]
    d = f"{'+' if intercept >= 0 else '−'} {abs(intercept):.3f}"
    scales = ", ".join(f"{name} {s:.2f}" for name, s in zip(MARGINS, scale))
    return (f"P(malignant) = σ({terms} {d})\n"
            f"  inputs: the margin logits of h1; their std on the training set: {scales}")


def fit_malignancy_head(model: IAIABL, margin_logits: np.ndarray, malignant: np.ndarray, seed: int = 0) -> dict:
    """Stage B: h2 ← scikit-learn LogisticRegression of ``malignant`` on the frozen, unnormalised
    margin logits (N, 3) of the training split; coef/intercept are copied into
    ``model.malignancy_head``. Returns the malignancy.json dictionary."""
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(margin_logits, dtype=np.float64)
    y = np.asarray(malignant, dtype=np.int64)
    scale = x.std(axis=0)
    note = None
    if len(np.unique(y)) < 2:
        p = float(np.clip(y.mean() if len(y) else 0.5, 1e-3, 1 - 1e-3))
        coef, intercept = np.zeros(len(MARGINS)), math.log(p / (1 - p))
        note = "the training split has only one pathology: h2 is a constant"
    else:
        lr = LogisticRegression(max_iter=1000, random_state=seed).fit(x, y)
        coef, intercept = lr.coef_[0].astype(np.float64), float(lr.intercept_[0])
    with torch.no_grad():
        model.malignancy_head.weight.copy_(torch.as_tensor(coef, dtype=torch.float32)[None])
        model.malignancy_head.bias.fill_(float(intercept))
    model.malignancy_fitted = True
    report = {
        "equation": malignancy_equation(coef, intercept, scale),
        "coefficients": {m: float(a) for m, a in zip(MARGINS, coef)},
        "offset": float(intercept),
        "scale": {m: float(s) for m, s in zip(MARGINS, scale)},
        "standardised_coefficients": {m: float(a * s) for m, a, s in zip(MARGINS, coef, scale)},
        "inputs": "margin logits of h1 (unnormalised), training split",
        "n_train": int(len(y)),
        "n_malignant": int(y.sum()),
    }
    if note:
        report["note"] = note
    return report

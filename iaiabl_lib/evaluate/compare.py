"""``compare_runs``: evaluated runs side by side in the layout of the paper's Tables 1-3, with
paired DeLong tests when they were evaluated on the same cases."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..config import MARGINS
from ..metrics import delong_test, margin_auroc_test
from ..rundir import check_run, read_run_json
from .protocol import GRADCAMPP_KEY
from .run import split_suffix
from .tables import fmt, table
from ..errors import InputError

__all__ = ["load_metrics", "compare_runs"]


def load_metrics(run_dir: str | Path, split: str = "test") -> dict:
    """RUN/metrics.json (``_<split>`` for other splits) of a run that ``rundir.check_run`` accepts,
    computed from the run's present model.pt (``model_sha256``; files written before it was
    recorded are accepted)."""
    path = Path(run_dir) / f"metrics{split_suffix(split)}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run `iaiabl evaluate --run {run_dir}` first")
    cfg = check_run(run_dir)
    metrics = read_run_json(path)
    now, then = (cfg.get("model_pt") or {}).get("sha256"), metrics.get("model_sha256")
    if now and then and now != then:
        raise InputError(f"{path} is stale: it was computed from another model.pt than the run's "
                         f"present one (the run was trained again); run `iaiabl evaluate --run {run_dir}` again")
    return metrics


def _load_predictions(run_dir: Path, split: str) -> dict | None:
    path = run_dir / f"predictions{split_suffix(split)}.npz"
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _pvalue(p: float | None) -> str:
    if p is None or not np.isfinite(p):
        return "—"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _paired_tests(run_dirs: list[Path], names: list[str], split: str) -> str | None:
    """DeLong tests of each run against the first, when all runs were evaluated on the same cases."""
    preds = [_load_predictions(d, split) for d in run_dirs]
    if len(preds) < 2 or any(p is None for p in preds):
        return None
    ref = preds[0]
    if any(p["ids"].shape != ref["ids"].shape or not np.array_equal(p["ids"], ref["ids"]) for p in preds):
        return None
    rows = []
    for name, p in zip(names[1:], preds[1:]):
        margin = dict.fromkeys((*MARGINS, "average", "macro"))
        if np.isfinite(ref["margin_prob"]).all() and np.isfinite(p["margin_prob"]).all():
            margin = margin_auroc_test(ref["labels"], ref["margin_prob"], p["margin_prob"])
        mal = None
        both = np.isfinite(ref["malignancy_prob"]).all() and np.isfinite(p["malignancy_prob"]).all()
        if both and 0 < ref["malignant"].sum() < ref["malignant"].size:
            mal = delong_test(ref["malignant"], ref["malignancy_prob"], p["malignancy_prob"])
        rows.append([f"{names[0]} vs {name}", *[_pvalue(margin.get(c)) for c in (*MARGINS, "average", "macro")],
                     _pvalue(mal)])
    return ("Paired DeLong tests on the same cases (two-sided p-values)\n\n"
            + table(["comparison", *MARGINS, "average (weighted)", "macro", "malignancy"], rows))


def compare_runs(run_dirs: Sequence[str | Path], names: Sequence[str] | None = None,
                 split: str = "test", digits: int = 2) -> str:
    """Markdown tables comparing evaluated runs, in the layout of the paper's tables.

    Table 1: margin AUROC per class and average, activation precision (lesion, fine); black-box
    runs take two rows (GradCAM, GradCAM++). Table 2: malignancy AUROC. Table 3: Cohen's κ of the
    predicted margin against the labels. Malignancy-only black boxes appear in Table 2 only.
    Values are "value [95 % CI]". When every run has per-case predictions for the same cases, a
    table of paired DeLong tests against the first run follows. Each run must have been evaluated
    (RUN/metrics.json).
    """
    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise InputError("compare needs at least one run directory")
    metrics = [load_metrics(d, split) for d in run_dirs]
    if names is None:
        names = [f"{d.name} ({m.get('preset')})" for d, m in zip(run_dirs, metrics)]
    names = list(names)
    if len(names) != len(run_dirs):
        raise InputError(f"--names gives {len(names)} names for {len(run_dirs)} runs")

    margin_runs = [(name, m) for name, m in zip(names, metrics) if m.get("task", "margin") == "margin"]
    t1 = []
    for name, m in margin_runs:
        aurocs = [fmt(m["margin_auroc"].get(c), digits) for c in (*MARGINS, "average", "macro")]
        maps = [("activation_precision", "")]
        if m.get("kind") == "blackbox":
            maps = [("activation_precision", " + GradCAM"), (GRADCAMPP_KEY, " + GradCAM++")]
        for key, tag in maps:
            ap = m.get(key, {})
            t1.append([name + tag, *aurocs, fmt(ap.get("lesion"), digits), fmt(ap.get("fine"), digits)])
    t2 = [[name, fmt(m["malignancy_auroc"], digits), m["n_test"]] for name, m in zip(names, metrics)]
    t3 = [[name, fmt(m["kappa"], digits), m["n_test"]] for name, m in margin_runs]

    parts = [
        "Table 1. Mass-margin classification: AUROC (one vs rest, DeLong 95 % CI; average weighted by "
        "the test class counts as in the paper, macro = unweighted mean) and activation precision "
        "(Eq. 9, τ = 0.95, the paper's protocol: every prototype of the true class, or the true "
        "class's Grad-CAM; mean over pairs, bootstrap 95 % CI over cases)",
        table(["model", *MARGINS, "average AUROC (weighted, the paper's)", "macro AUROC",
                "activation precision (lesion)", "activation precision (fine)"], t1),
        "Table 2. Malignancy prediction: AUROC (DeLong 95 % CI)",
        table(["model", "malignancy AUROC", "n"], t2),
        "Table 3. Agreement of the predicted margin with the labels: Cohen's κ (bootstrap 95 % CI)",
        table(["model", "Cohen's κ", "n"], t3),
    ]
    tests = _paired_tests(run_dirs, names, split)
    if tests:
        parts.append(tests)
    return "\n\n".join(parts)

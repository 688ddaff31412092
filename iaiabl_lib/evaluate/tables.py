"""Markdown for metrics: ``value [95 % CI]`` cells and one run's table (RUN/metrics.md)."""
from __future__ import annotations

from typing import Sequence

from ..config import MARGINS
from ..metrics import Summary
from .protocol import CEILING_KEY, GRADCAMPP_KEY

__all__ = ["fmt", "table", "format_metrics"]


def fmt(s: Summary | None, digits: int = 2) -> str:
    """``0.91 [0.87, 0.95]`` (value [95 % CI]); an em dash for an undefined metric."""
    if not s or s.get("value") is None:
        return "—"
    if s.get("ci_low") is None:
        return f"{s['value']:.{digits}f}"
    return f"{s['value']:.{digits}f} [{s['ci_low']:.{digits}f}, {s['ci_high']:.{digits}f}]"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def format_metrics(m: dict, digits: int = 2) -> str:
    """One run's metrics as a Markdown table (RUN/metrics.md)."""
    rows = [[f"margin AUROC, {c}", fmt(m["margin_auroc"][c], digits)] for c in MARGINS]
    rows.append(["margin AUROC, average (weighted by test counts, the paper's)",
                 fmt(m["margin_auroc"]["average"], digits)])
    if "macro" in m["margin_auroc"]:
        rows.append(["margin AUROC, macro (unweighted mean)", fmt(m["margin_auroc"]["macro"], digits)])
    rows.append(["Cohen's κ (margin)", fmt(m["kappa"], digits)])
    for key, label in (("activation_precision", "activation precision"),
                       (GRADCAMPP_KEY, "activation precision, GradCAM++")):
        if key in m:
            rows.append([f"{label}, lesion", fmt(m[key]["lesion"], digits)])
            rows.append([f"{label}, fine (n = {m.get('n_fine', '?')})", fmt(m[key]["fine"], digits)])
    if CEILING_KEY in m:
        grid = m[CEILING_KEY].get("grid")
        rows.append([f"activation precision a one-cell map can reach at the {grid} × {grid} grid, lesion",
                     fmt(m[CEILING_KEY]["lesion"], digits)])
        rows.append(["the same, fine", fmt(m[CEILING_KEY]["fine"], digits)])
    rows.append(["malignancy AUROC", fmt(m["malignancy_auroc"], digits)])
    title = (f"**{m.get('run', 'run')}** — preset {m.get('preset')}, {m.get('kind')}, "
             f"{m.get('split')} split, n = {m['n_test']}; value [95 % CI]")
    return title + "\n\n" + table(["metric", "value [95 % CI]"], rows)

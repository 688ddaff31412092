"""How good is the model a reader is looking at? One line beside every reading, from what
``iaiabl_lib.evaluate`` wrote for the run (``evaluate_run``: RUN/metrics.json and
RUN/predictions.npz of its test split; the book makes them with ``bookcache.ensure_metrics``):

* how often its margin call agrees with the recorded margin (on synthetic data, the data generator's): the test cases whose most
  probable margin in ``predictions.npz`` is the recorded one, out of all of them;
* its margin AUROC (the average one-vs-rest AUROC, with its confidence interval) and its malignancy
  AUROC, as ``metrics.json`` holds them.

No figure is typed or computed here besides that count. Without an evaluation the line says so
and how to make one; with a stale one (``evaluate.load_metrics`` refuses metrics of another
model.pt) likewise.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .words import pct

__all__ = ["ModelQuality", "model_quality", "quality_html"]


@dataclass
class ModelQuality:
    """What evaluate recorded for a run's test split (None: no usable evaluation, see ``why``)."""

    n: int | None = None
    agree: int | None = None                 # test cases whose margin call is the recorded margin
    margin_auroc: dict | None = None         # {"value", "ci_low", "ci_high"}: the average one-vs-rest
    malignancy_auroc: dict | None = None
    alpha: float = 0.05
    why: str = ""                            # why there is no evaluation to show


def model_quality(run) -> ModelQuality:
    """Read the run's test evaluation (``evaluate.load_metrics`` and ``predictions.npz``)."""
    from .. import evaluate
    from ..errors import UserError

    run_dir = Path(getattr(run, "dir", None) or ".")
    try:
        metrics = evaluate.load_metrics(run_dir)
    except (FileNotFoundError, ValueError, UserError) as e:
        return ModelQuality(why=str(e))
    path = run_dir / "predictions.npz"
    if not path.is_file():
        return ModelQuality(why=f"{path} not found; run `iaiabl evaluate --run {run_dir}` again")
    with np.load(path) as z:
        labels, prob = np.asarray(z["labels"]), np.asarray(z["margin_prob"])
    if len(labels) != metrics.get("n_test"):
        return ModelQuality(why=f"{path} holds {len(labels)} cases, metrics.json {metrics.get('n_test')}: "
                                f"run `iaiabl evaluate --run {run_dir}` again")
    return ModelQuality(n=int(len(labels)), agree=int((prob.argmax(axis=1) == labels).sum()),
                        margin_auroc=(metrics.get("margin_auroc") or {}).get("average"),
                        malignancy_auroc=metrics.get("malignancy_auroc"),
                        alpha=float((metrics.get("settings") or {}).get("alpha", 0.05)))


def _auroc(m: dict | None, alpha: float) -> str:
    if not m or m.get("value") is None:
        return "not defined on this split"
    ci = ""
    if m.get("ci_low") is not None and m.get("ci_high") is not None:
        ci = f" ({100 * (1 - alpha):.0f} % confidence interval {m['ci_low']:.2f} to {m['ci_high']:.2f})"
    return f"<b>{m['value']:.2f}</b>{ci}"


def quality_html(q: ModelQuality) -> str:
    """The line shown beside every reading."""
    if q.n is None:
        return ("<div class='iaiabl-quality iaiabl-quality-none'>How good is this model? It has no test "
                f"evaluation to show here: {html.escape(q.why)}</div>")
    return (f"<div class='iaiabl-quality' data-n='{q.n}' data-agree='{q.agree}' "
            f"data-margin-auroc='{(q.margin_auroc or {}).get('value')}' "
            f"data-malignancy-auroc='{(q.malignancy_auroc or {}).get('value')}'>"
            f"<b>How good is this model?</b> On its {q.n} test cases its margin call agrees with the "
            f"recorded margin on {q.agree} (<b>{pct(q.agree / q.n if q.n else 0.0)}</b>). How well "
            f"it ranks the margins (AUROC, 1 is perfect, 0.5 is chance): {_auroc(q.margin_auroc, q.alpha)}; "
            f"malignant against benign: {_auroc(q.malignancy_auroc, q.alpha)}.</div>")

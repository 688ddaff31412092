"""``iaiabl evaluate`` and ``iaiabl compare``: the paper's evaluation of a trained run.

One file per idea:
    protocol   Eq. 9's maps and pairs, every metric from predictions (pure)
    loaders    a run reduced to what evaluation needs, per run kind; run/data compatibility
    run        evaluate_run: the files it writes
    tables     Markdown cells and one run's table
    compare    runs side by side (the paper's Tables 1-3), paired DeLong tests
    marker     marker_reliance: the same cases with and without the confounder's marker
    cli        the two subcommands

    evaluate_run(RUN)  ->  RUN/metrics.json, RUN/metrics.md, RUN/predictions.npz
    compare_runs([RUN, ...])  ->  Markdown tables in the layout of the paper's Tables 1-3

What is measured (Barnett et al. 2021, Tables 1-3, Eq. 9), on the test split of the prepared data:

* ``margin_auroc``: one-vs-rest AUROC of each margin class; ``average``: their mean weighted by the
  test class counts with the paper's interval (the paper's Table 1); ``macro``: the unweighted
  mean with the joint DeLong covariance interval (``metrics.margin_auroc``).
* ``kappa``: Cohen's κ (unweighted) between the predicted margin (argmax) and the label, overall,
  ``{value, ci_low, ci_high}`` with a percentile bootstrap CI over cases. docs/DESIGN.md §5 says
  "same form": one overall κ in the ``{value, ci_low, ci_high}`` form, not one per class.
* ``activation_precision``: Eq. 9 (``metrics.activation_precision``, τ = 0.95) with the paper's
  protocol (and the authors' ``highlighting_precision.py``): for IAIA-BL and ProtoPNet runs, the
  prototype activation map (PAM, ``model.activation_map``: the similarity map bilinearly upsampled
  to the image) of EVERY prototype of the case's TRUE class, and the mean over all (case, prototype)
  pairs (``true_class_pams``); for black-box runs the GradCAM map of the true class
  (``activation_precision``) and the GradCAM++ map (``activation_precision_gradcampp``). The
  bootstrap CI resamples cases (each with its pairs). ``lesion``: against the lesion mask, every
  test case; ``fine``: against the fine annotation, the test cases that have one. The
  predicted-class view (``predicted_class_pam``: the most activated prototype of the predicted
  class) is what the explorer shows a reader; it is never used in the tables.
* ``malignancy_auroc``: AUROC of the malignancy probability (h2, Eq. 10) against the pathology,
  DeLong 95 % CI; ``None`` values when the run has no malignancy output.
* ``n_test`` (cases evaluated), ``n_fine``, and ``run``, ``preset``, ``kind``, ``split``, ``data``,
  ``settings`` (α, τ, bootstrap size and seed, CI methods).

Undefined metrics (e.g. a class absent from a tiny test split) are ``null`` in metrics.json.
``metrics.json`` is the test split's file; other splits write ``metrics_<split>.json`` (and
``.md``, ``predictions_<split>.npz``). A run is evaluated only when ``rundir.check_run`` accepts
it (finished, model.pt the file it wrote), and not on cases whose patients it trained on
(``rundir.check_split``; ``--allow-overlap`` evaluates anyway, with a warning, and lists them in
``overlap_patients``). metrics.json keeps ``model_sha256``, the model.pt it was computed from, so
``compare`` refuses metrics left over from an earlier model. Per-case predictions are kept so that ``compare`` can run
paired DeLong tests between runs evaluated on the same cases.
"""
from __future__ import annotations

from .cli import add_cli, run_cli, run_compare_cli
from .compare import compare_runs, load_metrics
from .loaders import LOADERS, EvalModel, resolve_data_dir, run_kind
from .marker import marker_reliance
from .protocol import (CEILING_KEY, CI_METHODS, GRADCAMPP_KEY, METRIC_KEYS, Predictions, metrics_from_predictions,
                       pair_activation_precision, predicted_class_pam, single_cell_ceiling, true_class_pams)
from .run import evaluate_run, split_suffix
from .tables import fmt, format_metrics

__all__ = [
    "METRIC_KEYS", "GRADCAMPP_KEY", "CEILING_KEY", "CI_METHODS", "single_cell_ceiling", "Predictions", "EvalModel", "LOADERS",
    "predicted_class_pam", "true_class_pams", "pair_activation_precision", "metrics_from_predictions",
    "run_kind", "resolve_data_dir", "evaluate_run", "split_suffix", "load_metrics", "compare_runs",
    "fmt", "format_metrics", "add_cli", "run_cli", "run_compare_cli", "marker_reliance",
]

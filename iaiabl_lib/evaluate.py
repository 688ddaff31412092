"""``iaiabl evaluate`` and ``iaiabl compare``: the paper's evaluation of a trained run.

    evaluate_run(RUN)  ->  RUN/metrics.json, RUN/metrics.md, RUN/predictions.npz
    compare_runs([RUN, ...])  ->  Markdown tables in the layout of the paper's Tables 1-3

What is measured (Barnett et al. 2021, §4 and Tables 1-3), on the test split of the prepared data:

* ``margin_auroc``: one-vs-rest AUROC of each margin class; ``average``: their mean weighted by the
  test class counts with the paper's interval (the paper's Table 1); ``macro``: the unweighted
  mean with the joint DeLong covariance interval (``metrics.margin_auroc``).
* ``kappa``: Cohen's κ (unweighted) between the predicted margin (argmax) and the label, overall,
  ``{value, ci_low, ci_high}`` with a percentile bootstrap CI over cases. DESIGN.md §5 says
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

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .atomic import atomic_savez, atomic_write_text, remove_stale_tmp
from .config import MARGINS, Preset
from .data.dataset import PreparedDataset, load_prepared, to_tensors
from .metrics import (Summary, activation_precision, bootstrap_ci, cohen_kappa_ci, delong_test,
                      malignancy_auroc, margin_auroc, margin_auroc_test)
from .model import activation_map
from .rundir import check_run, check_split

__all__ = [
    "RUN_FILES", "METRIC_KEYS", "Predictions", "EvalModel", "LOADERS", "predicted_class_pam",
    "true_class_pams", "pair_activation_precision",
    "metrics_from_predictions", "evaluate_run", "load_metrics", "compare_runs", "format_metrics",
    "add_cli", "run_cli", "run_compare_cli",
]

RUN_FILES = {"iaiabl": ("config.json", "model.pt"), "blackbox": ("config.json", "model.pt")}
"""Files a run directory must hold to be evaluated, per run kind (config.json "kind")."""

METRIC_KEYS = ("margin_auroc", "kappa", "activation_precision", "malignancy_auroc", "n_test")
"""The keys of DESIGN.md §5 that every metrics.json carries."""

GRADCAMPP_KEY = "activation_precision_gradcampp"

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


@dataclass
class EvalModel:
    """A loaded run, reduced to what evaluation needs (one loader per run kind, ``LOADERS``)."""

    kind: str
    preset: str
    image_size: int
    num_classes: int
    predict: Callable[[PreparedDataset], Predictions]
    classes: tuple[str, ...] | None = None  # class names the run records, if it records them
    task: str = "margin"                    # black boxes: "margin" or "malignancy"


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
    if preds.malignancy_prob is None:                   # a margin-only black box
        out["malignancy_auroc"] = dict(undefined)
    else:
        out["malignancy_auroc"] = malignancy_auroc(malignant, preds.malignancy_prob, alpha)
    return out, per_case


# ---------------------------------------------------------------------------------------------
# Runs: files, config, loading
# ---------------------------------------------------------------------------------------------


def run_kind(cfg: dict) -> str:
    kind = cfg.get("kind", "iaiabl")
    if kind not in RUN_FILES:
        raise ValueError(f"config.json: unknown run kind {kind!r}; expected one of {', '.join(RUN_FILES)}")
    return kind


def _recorded_data_dir(cfg: dict) -> str | None:
    """The prepared-data path a run's config.json records (train.py writes it)."""
    for key in ("data_dir", "data", "data_path"):
        value = cfg.get(key)
        if isinstance(value, dict):
            value = value.get("path") or value.get("dir")
        if isinstance(value, str) and value:
            return value
    return None


def resolve_data_dir(run_dir: Path, cfg: dict, data_dir: str | Path | None) -> Path:
    """``--data`` if given, else the data path recorded in the run's config.json."""
    if data_dir is not None:
        path = Path(data_dir)
        if not path.is_dir():
            raise FileNotFoundError(f"prepared dataset {path} does not exist; create it with "
                                    "`iaiabl prepare --cbis DIR --out DATA` or pass another --data")
        return path
    recorded = _recorded_data_dir(cfg)
    if recorded is None:
        raise ValueError(f"{run_dir}/config.json records no data path; pass the prepared dataset "
                         "with --data DATA")
    path = Path(recorded)
    if not path.is_absolute() and not path.is_dir():
        path = run_dir / recorded                    # a path relative to the run
    if not path.is_dir():
        raise FileNotFoundError(f"the prepared dataset this run was trained on ({recorded}, from "
                                f"{run_dir}/config.json) does not exist any more; pass it with "
                                "--data DATA (or re-create it with `iaiabl prepare`)")
    return path


def _load_iaiabl(run_dir: Path, cfg: dict, device) -> EvalModel:
    """An IAIA-BL or ProtoPNet run (``rundir.load_run``), predicting with ``predict.predict``."""
    from .predict import predict
    from .rundir import load_run

    run = load_run(run_dir, device=device)
    preset: Preset = run.preset
    size = preset.model.image_size
    batch = preset.train.eval_batch_size

    def predict_cases(ds: PreparedDataset) -> Predictions:
        out = predict(run.model, to_tensors(ds, "cpu"), batch_size=batch, device=device)
        prob = np.asarray(out["margin_prob"], dtype=np.float64)
        pams, valid = true_class_pams(out["similarity_maps"], run.model.prototype_class, ds.labels, size)
        return Predictions(prob, np.asarray(out["malignancy_prob"], dtype=np.float64),
                           {"activation_precision": pams},
                           "PAMs of every prototype of the true class, mean over (case, prototype) pairs "
                           "(the paper's protocol)", {"activation_precision": valid})

    return EvalModel("iaiabl", preset.name, size, preset.model.num_classes, predict_cases,
                     _recorded_classes(cfg))


def _load_blackbox(run_dir: Path, cfg: dict, device) -> EvalModel:
    """A black-box VGG-16 run (``baselines.load_blackbox``). Margin task: margin probabilities and
    the GradCAM / GradCAM++ maps of the true class (the paper's protocol); malignancy task (the end-to-end baseline of
    Table 2): the malignancy probability only."""
    from .baselines import blackbox_predict, load_blackbox

    bb = load_blackbox(run_dir, device=device)
    size = int(bb.preset.model.image_size)
    margin_task = bb.task == "margin"
    batch = int(bb.preset.train.eval_batch_size)

    def predict_cases(ds: PreparedDataset) -> Predictions:
        out = blackbox_predict(bb.model, to_tensors(ds, "cpu"), batch_size=batch, device=device,
                               cams=margin_task, target_class=ds.labels if margin_task else None)
        if not margin_task:
            return Predictions(None, np.asarray(out["malignancy_prob"], dtype=np.float64), {},
                               "none (malignancy black box)")
        maps = {"activation_precision": np.asarray(out["gradcam"]),
                GRADCAMPP_KEY: np.asarray(out["gradcampp"])}
        return Predictions(np.asarray(out["margin_prob"], dtype=np.float64), None, maps,
                           "GradCAM and GradCAM++ maps of the true class (the paper's protocol)")

    # a malignancy black box has no margin classes to disagree with the data
    num_classes = bb.preset.model.num_classes if margin_task else len(MARGINS)
    classes = _recorded_classes(cfg) if margin_task else None
    return EvalModel("blackbox", bb.preset.name, size, num_classes, predict_cases, classes, task=bb.task)


LOADERS: dict[str, Callable[[Path, dict, object], EvalModel]] = {
    "iaiabl": _load_iaiabl,
    "blackbox": _load_blackbox,
}


def _recorded_classes(cfg: dict) -> tuple[str, ...] | None:
    for key in ("classes", "margins"):
        if isinstance(cfg.get(key), (list, tuple)):
            return tuple(str(c) for c in cfg[key])
    return None


def _check_compatible(model: EvalModel, data_dir: Path, run_dir: Path, train_data: Path | None) -> None:
    """The run and the data must agree on the classes and on the image size.

    Classes: the run's class list (config.json "classes", else its number of classes) must be
    ``MARGINS``. Image size: the loader resizes crops to the run's size; upsampling blurs the
    margins, so data with smaller crops than the run's input is refused unless the run was trained
    on crops of that same size.
    """
    if model.num_classes != len(MARGINS) or (model.classes is not None and model.classes != MARGINS):
        run_classes = ", ".join(model.classes) if model.classes else f"{model.num_classes} classes"
        raise ValueError(
            f"class mismatch: run {run_dir} predicts {run_classes}, the prepared dataset {data_dir} "
            f"has the margin classes {', '.join(MARGINS)}; evaluate with the data the run was trained "
            "on (--data), or retrain the run on this dataset")
    native = _native_size(data_dir)
    trained_on = _native_size(train_data) if train_data is not None else None
    if native is not None and native < model.image_size and native != trained_on:
        raise ValueError(
            f"image size mismatch: {data_dir} holds {native}-px crops but run {run_dir} (preset "
            f"{model.preset}) takes {model.image_size}-px images"
            + (f" and was trained on {trained_on}-px crops" if trained_on else "")
            + f"; upsampling would blur the margins. Re-run `iaiabl prepare --size {model.image_size}` "
            "(or evaluate with the data the run was trained on)")


def _native_size(data_dir: Path | None) -> int | None:
    """Side of the crops stored in a prepared dataset (without loading them); None if unreadable."""
    if data_dir is None or not (Path(data_dir) / "images.npy").is_file():
        return None
    try:
        images = np.load(Path(data_dir) / "images.npy", mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    return int(images.shape[-1])


# ---------------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------------


def _suffix(split: str) -> str:
    return "" if split == "test" else f"_{split}"


def evaluate_run(run_dir: str | Path, data_dir: str | Path | None = None, split: str = "test",
                 device=None, n_boot: int = 5000, *, seed: int = 0, alpha: float = 0.05,
                 tau: float = 0.95, write: bool = True, allow_overlap: bool = False) -> dict:
    """Evaluate a run on one split of its prepared data; write RUN/metrics.json (atomically),
    RUN/metrics.md and RUN/predictions.npz (``_<split>`` suffixes for splits other than test),
    and return the metrics dict (module docstring; DESIGN.md §5).

    ``data_dir`` overrides the data path recorded in the run's config.json. Cases whose patients
    the run trained on are refused unless ``allow_overlap`` (``rundir.check_split``).
    """
    run_dir = Path(run_dir)
    if n_boot < 1:
        raise ValueError(f"--bootstrap must be at least 1 (got {n_boot})")
    cfg = check_run(run_dir)                                     # finished, model.pt its own
    kind = run_kind(cfg)
    data_dir = resolve_data_dir(run_dir, cfg, data_dir)          # fail fast, before loading weights
    from .fastpath import pick_device
    device = pick_device(device)
    model = LOADERS[kind](run_dir, cfg, device)
    recorded = _recorded_data_dir(cfg)
    _check_compatible(model, data_dir, run_dir, Path(recorded) if recorded else None)
    ds = load_prepared(data_dir, size=model.image_size)
    cases = ds.subset(split)
    if len(cases) == 0:
        raise ValueError(f"{data_dir}: the {split!r} split is empty; prepare the data with enough "
                         "patients, or choose another --split")
    overlap = check_split(cfg, run_dir, [r.get("patient_id", "") for r in cases.manifest], split, data_dir,
                          allow_overlap)
    preds = model.predict(cases)
    metrics, per_case = metrics_from_predictions(
        cases.labels, cases.malignant, cases.has_fine, cases.lesion_masks, cases.fine_masks,
        preds, n_boot=n_boot, seed=seed, alpha=alpha, tau=tau)
    result = {
        "run": str(run_dir), "preset": model.preset, "kind": model.kind, "split": split,
        "data": str(data_dir), **({"task": model.task} if model.kind == "blackbox" else {}), **metrics,
        "settings": {"alpha": alpha, "tau": tau, "n_boot": n_boot, "seed": seed,
                     "activation_map": preds.map_kind, "ci": CI_METHODS},
        "model_sha256": (cfg.get("model_pt") or {}).get("sha256"),
        **({"overlap_patients": overlap} if overlap else {}),
    }
    if write:
        remove_stale_tmp(run_dir)                                # left by a killed evaluate or train
        suffix = _suffix(split)
        atomic_write_text(run_dir / f"metrics{suffix}.json", json.dumps(result, indent=1) + "\n")
        atomic_write_text(run_dir / f"metrics{suffix}.md", format_metrics(result) + "\n")
        n = len(cases)
        missing = np.full(n, np.nan)
        atomic_savez(run_dir / f"predictions{suffix}.npz", compressed=True, ids=np.asarray(cases.ids, dtype=str),
                      labels=cases.labels, malignant=cases.malignant, has_fine=cases.has_fine,
                      margin_prob=preds.margin_prob if preds.margin_prob is not None
                      else np.full((n, len(MARGINS)), np.nan),
                      malignancy_prob=preds.malignancy_prob if preds.malignancy_prob is not None else missing,
                      **per_case)
    return result


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------


def fmt(s: Summary | None, digits: int = 2) -> str:
    """``0.91 [0.87, 0.95]`` (value [95 % CI]); an em dash for an undefined metric."""
    if not s or s.get("value") is None:
        return "—"
    if s.get("ci_low") is None:
        return f"{s['value']:.{digits}f}"
    return f"{s['value']:.{digits}f} [{s['ci_low']:.{digits}f}, {s['ci_high']:.{digits}f}]"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
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
    rows.append(["malignancy AUROC", fmt(m["malignancy_auroc"], digits)])
    title = (f"**{m.get('run', 'run')}** — preset {m.get('preset')}, {m.get('kind')}, "
             f"{m.get('split')} split, n = {m['n_test']}; value [95 % CI]")
    return title + "\n\n" + _table(["metric", "value [95 % CI]"], rows)


# ---------------------------------------------------------------------------------------------
# compare
# ---------------------------------------------------------------------------------------------


def load_metrics(run_dir: str | Path, split: str = "test") -> dict:
    """RUN/metrics.json (``_<split>`` for other splits) of a run that ``rundir.check_run`` accepts,
    computed from the run's present model.pt (``model_sha256``; files written before it was
    recorded are accepted)."""
    path = Path(run_dir) / f"metrics{_suffix(split)}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run `iaiabl evaluate --run {run_dir}` first")
    cfg = check_run(run_dir)
    metrics = json.loads(path.read_text(encoding="utf-8"))
    now, then = (cfg.get("model_pt") or {}).get("sha256"), metrics.get("model_sha256")
    if now and then and now != then:
        raise ValueError(f"{path} is stale: it was computed from another model.pt than the run's "
                         f"present one (the run was trained again); run `iaiabl evaluate --run {run_dir}` again")
    return metrics


def _load_predictions(run_dir: Path, split: str) -> dict | None:
    path = run_dir / f"predictions{_suffix(split)}.npz"
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
            + _table(["comparison", *MARGINS, "average (weighted)", "macro", "malignancy"], rows))


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
        raise ValueError("compare needs at least one run directory")
    metrics = [load_metrics(d, split) for d in run_dirs]
    if names is None:
        names = [f"{d.name} ({m.get('preset')})" for d, m in zip(run_dirs, metrics)]
    names = list(names)
    if len(names) != len(run_dirs):
        raise ValueError(f"--names gives {len(names)} names for {len(run_dirs)} runs")

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
        _table(["model", *MARGINS, "average AUROC (weighted, the paper's)", "macro AUROC",
                "activation precision (lesion)", "activation precision (fine)"], t1),
        "Table 2. Malignancy prediction: AUROC (DeLong 95 % CI)",
        _table(["model", "malignancy AUROC", "n"], t2),
        "Table 3. Agreement of the predicted margin with the labels: Cohen's κ (bootstrap 95 % CI)",
        _table(["model", "Cohen's κ", "n"], t3),
    ]
    tests = _paired_tests(run_dirs, names, split)
    if tests:
        parts.append(tests)
    return "\n\n".join(parts)


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register ``evaluate --run RUN [--data DATA] [--split test] [--device D] [--bootstrap N]``
    and ``compare RUN [RUN ...] [--names ...] [--out FILE.md]``."""
    p = subparsers.add_parser(
        "evaluate", help="AUROC (DeLong), κ, activation precision of a trained run",
        description="Evaluate a run on its prepared data; writes RUN/metrics.json, RUN/metrics.md "
                    "and RUN/predictions.npz.")
    p.add_argument("--run", required=True, type=Path, metavar="RUN", help="run directory (iaiabl train --out)")
    p.add_argument("--data", type=Path, default=None, metavar="DATA",
                   help="prepared dataset (default: the path recorded in RUN/config.json)")
    p.add_argument("--split", choices=("train", "val", "test"), default="test",
                   help="split to evaluate (default test)")
    p.add_argument("--device", default=None, metavar="D", help="torch device (default: cuda if available)")
    p.add_argument("--bootstrap", type=int, default=5000, metavar="N",
                   help="bootstrap resamples for κ and activation precision CIs (default 5000)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="bootstrap seed (default 0)")
    p.add_argument("--allow-overlap", action="store_true",
                   help="evaluate even when patients of the evaluated split were in the run's train/val "
                        "split (data prepared with another split); they are listed in metrics.json")
    p.set_defaults(func=run_cli)

    c = subparsers.add_parser(
        "compare", help="paper-style tables (Tables 1-3) comparing evaluated runs",
        description="Markdown tables of margin AUROC, activation precision, malignancy AUROC and κ "
                    "for runs evaluated with `iaiabl evaluate`.")
    c.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="evaluated run directories")
    c.add_argument("--names", nargs="+", default=None, metavar="NAME", help="row names, one per run")
    c.add_argument("--split", choices=("train", "val", "test"), default="test",
                   help="which evaluation to compare (default test)")
    c.add_argument("--out", type=Path, default=None, metavar="FILE.md", help="also write the tables here")
    c.set_defaults(func=run_compare_cli)


def run_cli(args: argparse.Namespace) -> int:
    """``iaiabl evaluate``: prints the metrics table and where it was written."""
    result = evaluate_run(args.run, args.data, split=args.split, device=args.device,
                          n_boot=args.bootstrap, seed=args.seed, allow_overlap=args.allow_overlap)
    print(format_metrics(result))
    print(f"\nwrote {Path(args.run) / ('metrics' + _suffix(args.split) + '.json')}")
    return 0


def run_compare_cli(args: argparse.Namespace) -> int:
    """``iaiabl compare``: prints the tables (and writes them with --out)."""
    text = compare_runs(args.runs, args.names, split=args.split)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, text + "\n")
    return 0

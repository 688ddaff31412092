"""``evaluate_run``: a run on one split of its prepared data -> RUN/metrics.json, RUN/metrics.md,
RUN/predictions.npz (each written aside, then renamed)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..atomic import atomic_savez, atomic_write_text, remove_stale_tmp
from ..config import MARGINS
from ..rundir import check_run
from .loaders import LOADERS, resolve_data_dir, run_kind, split_cases
from .protocol import CI_METHODS, metrics_from_predictions
from .tables import format_metrics
from ..errors import InputError

__all__ = ["evaluate_run", "split_suffix"]


def split_suffix(split: str) -> str:
    return "" if split == "test" else f"_{split}"


def evaluate_run(run_dir: str | Path, data_dir: str | Path | None = None, split: str = "test",
                 device=None, n_boot: int = 5000, *, seed: int = 0, alpha: float = 0.05,
                 tau: float = 0.95, write: bool = True, allow_overlap: bool = False) -> dict:
    """Evaluate a run on one split of its prepared data; write RUN/metrics.json (atomically),
    RUN/metrics.md and RUN/predictions.npz (``_<split>`` suffixes for splits other than test),
    and return the metrics dict (module docstring; docs/DESIGN.md §5).

    ``data_dir`` overrides the data path recorded in the run's config.json. Cases whose patients
    the run trained on are refused unless ``allow_overlap`` (``rundir.check_split``).
    """
    run_dir = Path(run_dir)
    if n_boot < 1:
        raise InputError(f"--bootstrap must be at least 1 (got {n_boot})")
    cfg = check_run(run_dir)                                     # finished, model.pt its own
    kind = run_kind(cfg)
    data_dir = resolve_data_dir(run_dir, cfg, data_dir)          # fail fast, before loading weights
    from ..fastpath import pick_device
    device = pick_device(device)
    model = LOADERS[kind](run_dir, cfg, device)
    cases, overlap = split_cases(model, cfg, run_dir, data_dir, split, allow_overlap)
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
        suffix = split_suffix(split)
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

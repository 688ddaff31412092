"""Where do the tiny IAIA-BL's prototypes end up, seed by seed, under a given setting?

Trains IAIA-BL (tiny preset unless --preset) on the book's confounded data set of each seed (the
data ``iaiabl science --seeds`` uses: ``bookcache.ensure_data("confounded", seed=S)``) with the
given overrides, evaluates it on the marker-free test split with the paper's protocols, and prints
one JSON line per seed: average AUROC, lesion and fine activation precision (Eq. 9, every prototype
of the true class), malignancy AUROC, κ, the reliance on the marker (``evaluate.marker_reliance``:
the validation cases with and without it), prototypes left per class after pruning, and the
trajectory of the validation lesion precision and of the distinct pushed patches
(history.csv's diagnostics), then mean [min, max] over the seeds.

    python benchmarks/prototype_stability.py --seeds 0 1 2 --set model.prototype_channels=32
    python benchmarks/prototype_stability.py --seeds 0 1 2 --set train.push_set=lesion --tag lesion-push
    python benchmarks/prototype_stability.py --seeds 0 1 2 --val-data unmarked --tag unmarked-val

``--data default`` trains and tests on the unconfounded default set instead (no marker figures), e.g.
``--preset tiny-protopnet --data default`` for the control of the science check.

``--val-data NAME`` validates and selects the model on the validation split of another book data
set holding the same cases ("unmarked": the confounded set's cases without the marker), training
unchanged: the model-selection ablation of issue 21.

Runs go to ``--out`` (default /tmp/iaiabl-stability/<tag>/s<seed>), the data to the book cache.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iaiabl_lib import bookcache  # noqa: E402
from iaiabl_lib.evaluate import evaluate_run, marker_reliance  # noqa: E402
from iaiabl_lib import science  # noqa: E402
from iaiabl_lib.config import resolve_preset  # noqa: E402
from iaiabl_lib.train import train  # noqa: E402


def one_seed(seed: int, preset: str, overrides: dict, out: Path, device: str, val_data: str | None = None,
             data_name: str = "confounded") -> dict:
    # the data prepared at the run's own image size (model.image_size may be overridden): upsampling
    # crops prepared at the preset's size would add pixels but no detail
    size = resolve_preset(preset, overrides).model.image_size
    data = bookcache.ensure_data(data_name, device, size=size, seed=seed)
    val = bookcache.ensure_data(val_data, device, size=size, seed=seed) if val_data else None
    t0 = time.perf_counter()
    run = train(data, preset, out, seed=seed, device=device, progress=False, overrides=overrides, resume=False,
                val_data=val)
    m = evaluate_run(out, n_boot=1000, device=device)
    marker = {"probability_drop": None, "auroc_drop": None}      # the marker exists on the confounded set only
    if data_name == "confounded":
        marker = marker_reliance(out, data, bookcache.ensure_data("unmarked", device, size=size, seed=seed),
                                 device=device)
    per_class = np.bincount(np.asarray(run.config["prototype_class"]), minlength=3).tolist()
    off_patch = science._off_patch(out)          # the science table's own count (OFF_PATCH_SQ_DISTANCE)
    traj = [{"epoch": h["epoch"], "stage": h["stage"], "val_lesion_ap": h.get("val_lesion_ap"),
             "distinct": h.get("distinct_prototypes")}
            for h in run.history if h["stage"] == "push"]
    return {"seed": seed, "average_auroc": m["margin_auroc"]["average"]["value"],
            "lesion_ap": m["activation_precision"]["lesion"]["value"],
            "fine_ap": m["activation_precision"]["fine"]["value"],
            "malignancy_auroc": m["malignancy_auroc"]["value"], "kappa": m["kappa"]["value"],
            "lesion_ap_ceiling": m.get("activation_precision_ceiling", {}).get("lesion", {}).get("value"),
            "marker_probability_drop": marker["probability_drop"], "marker_auroc_drop": marker["auroc_drop"],
            "prototypes_per_class": per_class, "off_patch": off_patch, "best_epoch": run.config["best_epoch"],
            "pushes": traj, "seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="preset overrides (one or more; the option may repeat)")
    p.add_argument("--tag", default="default")
    p.add_argument("--out", default=None, help="runs directory (default /tmp/iaiabl-stability/TAG)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--data", default="confounded", choices=("confounded", "default"),
                   help="the book data set to train and test on (default: confounded)")
    p.add_argument("--val-data", default=None, choices=sorted(bookcache.DATASETS),
                   help="select the model on this book data set's validation split (same cases)")
    args = p.parse_args(argv)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key.strip()] = value
    root = Path(args.out or f"/tmp/iaiabl-stability/{args.tag}")
    rows = []
    for seed in args.seeds:
        row = one_seed(seed, args.preset, overrides, root / f"s{seed}", args.device, args.val_data, args.data)
        rows.append(row)
        print(json.dumps({"tag": args.tag, "data": args.data, "overrides": overrides, "val_data": args.val_data,
                          **row}), flush=True)
    summary = {}
    for key in ("average_auroc", "lesion_ap", "fine_ap", "malignancy_auroc", "kappa", "marker_probability_drop"):
        vals = [r[key] for r in rows if r[key] is not None]
        if vals:
            summary[key] = f"{np.mean(vals):.2f} [{np.min(vals):.2f}, {np.max(vals):.2f}]"
    summary["fewest_prototypes_of_a_class"] = [min(r["prototypes_per_class"]) for r in rows]
    print(json.dumps({"tag": args.tag, "summary": summary}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Does the black box fit its training split? One tiny black-box run on a book data set and seed.

Trains ``baselines.train_blackbox`` (preset "tiny", i.e. the ``tiny-blackbox`` recipe, with any
overrides) on ``bookcache.ensure_data(DATASET, seed=SEED)``, evaluates it on the test split and
prints one JSON line: the average AUROC on the un-augmented training split at the last epoch, at
its best and at the selected epoch, the first epoch at which it reached 0.95, the selected epoch, the validation AUROC it was selected on, the
test AUROC and Grad-CAM's lesion activation precision.

    python benchmarks/blackbox_fit.py confounded 100
    python benchmarks/blackbox_fit.py default 100 train.select_from_epoch=0

The recipe's choice (README, "How the tiny preset was chosen") was made with it on seed 100.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iaiabl_lib import bookcache  # noqa: E402
from iaiabl_lib.baselines import train_blackbox  # noqa: E402
from iaiabl_lib.evaluate import evaluate_run  # noqa: E402
from iaiabl_lib.rundir import read_config, read_history  # noqa: E402


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    dataset, seed = argv[0], int(argv[1])
    overrides = dict(a.split("=", 1) for a in argv[2:])
    data = bookcache.ensure_data(dataset, "cpu", seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "blackbox"
        t0 = time.perf_counter()
        train_blackbox(data, "tiny", out, seed=seed, device="cpu", progress=False, overrides=overrides or None)
        seconds = time.perf_counter() - t0
        history, cfg = read_history(out / "history.csv"), read_config(out)
        m = evaluate_run(out, n_boot=200, device="cpu")
    selected = next(r for r in history if r["epoch"] == cfg["selected_epoch"])
    print(json.dumps({"data": dataset, "seed": seed, "overrides": overrides, "train_seconds": round(seconds, 1),
                      "train_auroc_last": history[-1]["train_auroc"],
                      "train_auroc_max": max(r["train_auroc"] for r in history),
                      "train_auroc_selected": selected["train_auroc"], "selected_epoch": cfg["selected_epoch"],
                      # how much room the schedule left: the first epoch whose training AUROC reached 0.95
                      "first_epoch_at_0.95": next((r["epoch"] for r in history if r["train_auroc"] >= 0.95), None),
                      "selected_val_auroc": cfg["selected_val_auroc"],
                      "test_auroc": m["margin_auroc"]["average"]["value"],
                      "gradcam_lesion_ap": m["activation_precision"]["lesion"]["value"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

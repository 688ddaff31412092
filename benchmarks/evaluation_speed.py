"""Benchmark (not a test): the speed targets of the evaluation issue.

  * one case's explanation (``explain.explain_case``) on the CPU with the tiny preset, per case;
  * the 5000-resample bootstrap of a test set (activation precision, mean) and the 5000-resample
    bootstrap of Cohen's κ.

    python benchmarks/evaluation_speed.py [--run RUN] [--cases 20] [--n 150]

Without --run it uses the book's cached tiny IAIA-BL run (trained on first use).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iaiabl_lib.explain import explain_case  # noqa: E402
from iaiabl_lib.metrics import bootstrap_ci, cohen_kappa_ci  # noqa: E402
from iaiabl_lib.train import load_run  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default=None, help="an IAIA-BL run directory (default: the book's tiny run)")
    ap.add_argument("--cases", type=int, default=20, help="cases to explain")
    ap.add_argument("--n", type=int, default=150, help="test-set size for the bootstrap")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    if args.run is None:
        from iaiabl_lib import bookcache
        args.run = bookcache.ensure_run("iaiabl", "cpu")
    run = load_run(args.run, device="cpu")
    explain_case(run, 0)                                   # warm-up: loads the dataset once
    times = []
    for i in range(args.cases):
        t0 = time.perf_counter()
        explain_case(run, i)
        times.append(time.perf_counter() - t0)
    rng = np.random.default_rng(0)
    x, labels = rng.random(args.n), rng.integers(0, 3, args.n)
    t0 = time.perf_counter()
    bootstrap_ci(x, n_boot=5000)
    t_boot = time.perf_counter() - t0
    t0 = time.perf_counter()
    cohen_kappa_ci(labels, (labels + (x > 0.7)) % 3, n_boot=5000)
    t_kappa = time.perf_counter() - t0
    res = {"explain_median_ms": round(1000 * float(np.median(times)), 1),
           "explain_max_ms": round(1000 * max(times), 1),
           "bootstrap_5000_s": round(t_boot, 4), "kappa_bootstrap_5000_s": round(t_kappa, 4), "n": args.n}
    print(f"explain_case (tiny, CPU): median {res['explain_median_ms']} ms, max {res['explain_max_ms']} ms "
          f"over {args.cases} cases")
    print(f"bootstrap, 5000 resamples of {args.n} cases: {t_boot:.3f} s; κ bootstrap: {t_kappa:.3f} s")
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())

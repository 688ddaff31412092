"""``iaiabl evaluate`` and ``iaiabl compare``."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..atomic import atomic_write_text
from .compare import compare_runs
from .run import evaluate_run, split_suffix
from .tables import format_metrics

__all__ = ["add_cli", "run_cli", "run_compare_cli"]


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
    print(f"\nwrote {Path(args.run) / ('metrics' + split_suffix(args.split) + '.json')}")
    return 0


def run_compare_cli(args: argparse.Namespace) -> int:
    """``iaiabl compare``: prints the tables (and writes them with --out)."""
    text = compare_runs(args.runs, args.names, split=args.split)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, text + "\n")
    return 0

"""``iaiabl train``: the command line of the trainer."""
from __future__ import annotations

import argparse
import time

from ..config import PRESET_NAMES
from .estimate import estimate
from .trainer import train
from ..errors import InputError

__all__ = ["add_cli", "run_cli"]


def add_cli(subparsers) -> None:
    """Register ``iaiabl train``."""
    p = subparsers.add_parser(
        "train", help="train IAIA-BL on a prepared dataset (stages A1, A2, A3, B)",
        description="Train IAIA-BL: warm-up and joint epochs, push + last layer on schedule, pruning, "
                    "then the malignancy head. Resumes an interrupted run in the same --out.")
    p.add_argument("--data", required=True, help="prepared dataset (from `iaiabl prepare`)")
    p.add_argument("--preset", default="tiny", choices=PRESET_NAMES, help="tiny (CPU) | paper (GPU) | ...")
    p.add_argument("--out", default=None, help="run directory to write (required unless --estimate-only)")
    p.add_argument("--epochs", type=int, default=None, help="override the preset's number of epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA if present)")
    p.add_argument("--no-resume", action="store_true", help="start afresh even if RUN/resume.pt exists")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset field, e.g. --set train.warm_epochs=1 (repeatable)")
    p.add_argument("--val-data", default=None, metavar="DIR",
                   help="validate and select the model on the val split of this prepared dataset "
                        "(the same cases, e.g. without the confounder's marker) instead of --data's")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--estimate-only", action="store_true",
                   help="print how long the run would take on this device (a few timed steps) and exit")
    p.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    overrides = {}
    for item in args.set:
        key, eq, value = item.partition("=")
        if not eq:
            raise InputError(f"--set {item!r}: expected KEY=VALUE, e.g. train.warm_epochs=1")
        overrides[key.strip()] = value
    if args.estimate_only:
        est = estimate(args.data, args.preset, epochs=args.epochs, seed=args.seed, device=args.device,
                       overrides=overrides)
        print(est.describe())
        return 0
    if args.out is None:
        raise InputError("--out is required: the run directory to write (or pass --estimate-only)")
    t0 = time.perf_counter()
    run = train(args.data, args.preset, args.out, epochs=args.epochs, seed=args.seed, device=args.device,
                progress=not args.quiet, overrides=overrides, resume=not args.no_resume,
                val_data=args.val_data)
    cfg = run.config
    print(f"run {run.dir}: preset {run.preset.name}, {cfg.get('num_prototypes')} prototypes "
          f"({run.prune.get('before')} → {run.prune.get('after')} after pruning), best pushed epoch "
          f"{cfg.get('best_epoch')}, validation average margin AUROC {cfg.get('val_average_margin_auroc'):.3f}, "
          f"{time.perf_counter() - t0:.0f} s" + (f" (estimated {cfg['estimate']['seconds']:.0f} s)" if "estimate" in cfg else ""))
    if args.quiet:   # with progress output the trainer has printed it already
        print("malignancy head h2 (Eq. 10):\n" + run.malignancy.get("equation", ""))
    return 0

"""``iaiabl baseline``."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..atomic import atomic_write_json
from ..config import get_preset

from .blackbox import TASKS
from .protopnet import train_protopnet
from .radiologists import radiologist_auroc
from .training import train_blackbox
from ..errors import InputError

__all__ = ["add_cli", "run_cli"]


def add_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``baseline --data DATA --model blackbox|protopnet|radiologists --task
    margin|malignancy --preset tiny|paper --out RUN [--epochs E] [--seed S] [--device D]``."""
    p = subparsers.add_parser(
        "baseline", help="train a baseline of the paper (black-box VGG-16, ProtoPNet)",
        description="Baselines of Barnett et al. (2021): a black-box VGG-16 margin or malignancy "
                    "classifier (GradCAM / GradCAM++ for its saliency), ProtoPNet (IAIA-BL's "
                    "training with the ProtoPNet preset), or the radiologists' BI-RADS estimate.")
    p.add_argument("--data", required=True, type=Path, metavar="DATA", help="prepared dataset")
    p.add_argument("--model", choices=("blackbox", "protopnet", "radiologists"), default="blackbox")
    p.add_argument("--task", choices=TASKS, default="margin",
                   help="blackbox only: margin (3 logits) or end-to-end malignancy (1 logit)")
    p.add_argument("--preset", default="tiny", metavar="PRESET",
                   help="tiny (CPU) or paper (GPU; VGG-16 with ImageNet weights); default tiny")
    p.add_argument("--out", type=Path, metavar="RUN", help="run directory to write")
    p.add_argument("--epochs", type=int, metavar="E", help="epochs (default: the preset's)")
    p.add_argument("--seed", type=int, default=0, metavar="S")
    p.add_argument("--device", metavar="D", help="cpu, cuda, cuda:1, mps (default: best available)")
    p.add_argument("--split", default="test", help="radiologists only: split to score (default test)")
    p.set_defaults(func=run_cli)
    return p


def run_cli(args: argparse.Namespace) -> int:
    if args.model == "radiologists":
        result = radiologist_auroc(args.data, split=args.split)
        text = json.dumps(result, indent=2)
        print(text)
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(args.out / "radiologists.json", result)
        return 0
    if args.out is None:
        raise InputError("--out RUN is required to train a baseline")
    get_preset(args.preset)  # a clear error for an unknown preset
    if args.model == "protopnet":
        if args.task != "margin":
            print("note: ProtoPNet classifies margins; its malignancy comes from stage B as in IAIA-BL")
        train_protopnet(args.data, args.preset, args.out, epochs=args.epochs, seed=args.seed,
                        device=args.device, progress=True)
    else:
        train_blackbox(args.data, args.preset, args.out, task=args.task, epochs=args.epochs,
                       seed=args.seed, device=args.device, progress=True)
    print(f"wrote {args.out}")
    return 0

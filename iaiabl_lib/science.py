"""The science check of the README: does the fine-annotation loss keep the model looking at the
lesion when the training data carry a confounder?

On the synthetic set with ``--confounder 0.9`` (a burned-in marker on 90 % of one class's training
ROIs, never in the test split) it trains IAIA-BL, IAIA-BL without the fine-annotation loss, the
ProtoPNet baseline and the black-box VGG-style classifier with the preset of the device (tiny on a
CPU), evaluates each on the marker-free test split, and prints the paper's Tables 1-3 side by side.
The runs are the book's cached runs (``bookcache``), so the book and this command agree.

    iaiabl science [--device D] [--out FILE.md]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

ROWS = (("iaiabl", "IAIA-BL"), ("nofine", "IAIA-BL without fine-annotation loss"),
        ("protopnet", "ProtoPNet"), ("blackbox", "black-box VGG-style CNN"))


def confounder_experiment(device=None, data: str = "confounded") -> str:
    """Train (or load) the four models on ``data`` and return the Markdown comparison."""
    from . import bookcache
    from .evaluate import compare_runs

    dirs, names = [], []
    for kind, name in ROWS:
        bookcache.ensure_metrics(kind, device, data)
        dirs.append(bookcache.ensure_run(kind, device, data))
        names.append(name)
    return compare_runs(dirs, names=names)


def add_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "science", help="the confounder experiment: IAIA-BL vs no fine loss vs ProtoPNet vs black box",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None, help="cpu, cuda (default: CUDA if present)")
    p.add_argument("--data", default="confounded", help="book data set name (default: confounded)")
    p.add_argument("--out", default=None, help="also write the tables to this Markdown file")
    p.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    table = confounder_experiment(args.device, args.data)
    print(table)
    print(f"\n({time.perf_counter() - t0:.0f} s including any training)")
    if args.out:
        from .train import atomic_write_bytes

        atomic_write_bytes(Path(args.out), table.encode())
    return 0

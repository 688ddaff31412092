"""The ``iaiabl synth`` command (docs/DESIGN.md §5): flags --out --patients --size --seed --confounder
(+ --confounder-class --test-fraction --quiet)."""

from __future__ import annotations

import argparse

from ..cbis_format import MAIN_MARGINS, MARGIN_NAMES
from .generate import make_synthetic

__all__ = ["add_cli", "run_cli"]


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register ``synth`` on an argparse subparsers object (sets ``func=run_cli``)."""
    p = subparsers.add_parser(
        "synth", help="write a CBIS-DDSM-shaped tree of procedural mammograms",
        description="Procedural mammograms written exactly as a TCIA NBIA download of CBIS-DDSM "
                    "(mass CSVs, DICOM tree, metadata.csv), plus fine-annotation masks. Labels "
                    "follow the real CBIS-DDSM tables' joint distribution.")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--patients", type=int, default=260, help="number of patients (default 260)")
    p.add_argument("--size", type=int, default=512,
                   help="full-mammogram height in px, width 0.8 x (default 512)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--confounder", type=float, default=0.0,
                   help="probability of a burned-in marker per train ROI of --confounder-class")
    p.add_argument("--confounder-class", default="indistinct",
                   choices=list(MARGIN_NAMES) + list(MAIN_MARGINS))
    p.add_argument("--test-fraction", type=float, default=0.3)
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run_cli)
    return p


def run_cli(args: argparse.Namespace) -> int:
    """Run ``synth`` from parsed arguments; prints a small table and the time taken."""
    summary = make_synthetic(args.out, patients=args.patients, size=args.size, seed=args.seed,
                             confounder=args.confounder, confounder_class=args.confounder_class,
                             test_fraction=args.test_fraction, progress=not args.quiet)
    print(f"{'split':<6} {'circ.':>6} {'indist.':>8} {'spic.':>6} {'other':>6} {'total':>6}")
    for split, c in summary["counts"].items():
        print(f"{split:<6} {c['circumscribed']:>6} {c['indistinct']:>8} {c['spiculated']:>6} "
              f"{c['other']:>6} {c['total']:>6}")
    conf = summary["confounder"]
    if conf["probability"] > 0:
        print(f"confounder markers placed: {conf['placed']} of {conf['eligible']} "
              f"({conf['class']}, p={conf['probability']})")
    print(f"wrote {summary['dicom_files']} DICOM files to {args.out} in {summary['seconds']:.1f} s")
    return 0

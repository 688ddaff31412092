"""``iaiabl prepare``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


from iaiabl_lib.data.dicom import DEFAULT_MAX_PIXELS

from .importer import prepare

__all__ = ["add_cli", "run_cli"]


def add_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``prepare --cbis DIR --out DATA [--size PX] [--split paper|official] [--seed S]``."""
    p = subparsers.add_parser(
        "prepare", help="import a CBIS-DDSM(-shaped) tree into a prepared dataset",
        description="Crop, window and mask every usable mass ROI of a CBIS-DDSM download (or of "
                    "`iaiabl synth` output) and write DATA/{manifest.csv,images.npy,...}.")
    p.add_argument("--cbis", required=True, type=Path, metavar="DIR",
                   help="folder with the two mass CSVs and the CBIS-DDSM/ DICOM tree")
    p.add_argument("--out", required=True, type=Path, metavar="DATA", help="prepared dataset folder to write")
    p.add_argument("--size", type=int, default=224, metavar="PX", help="ROI side in pixels (default 224)")
    p.add_argument("--split", choices=("paper", "official"), default="paper",
                   help="paper: patient-level 73/12/15 stratified; official: CBIS-DDSM's test set")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="split seed (default 0)")
    p.add_argument("--max-megapixels", type=float, default=DEFAULT_MAX_PIXELS / 1e6, metavar="MP",
                   help="refuse DICOM files declaring more than this many megapixels (Rows x Columns "
                        f"x frames), before decoding them (default {DEFAULT_MAX_PIXELS / 1e6:g}; a "
                        "mammogram has 10-40)")
    p.set_defaults(func=run_cli)
    return p


def run_cli(args: argparse.Namespace) -> int:
    """Entry point of ``iaiabl prepare``: 0 on success; errors (``CbisError``...) are reported by
    ``cli.main``'s error policy."""
    prepare(args.cbis, args.out, size=args.size, split=args.split, seed=args.seed,
            progress=sys.stderr.isatty(), max_pixels=int(args.max_megapixels * 1e6))
    return 0

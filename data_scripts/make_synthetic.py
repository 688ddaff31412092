#!/usr/bin/env python
"""Write a CBIS-DDSM-shaped tree of procedural mammograms (+ fine-annotation masks).

    python data_scripts/make_synthetic.py --out data/synth [--patients 260] [--size 512] [--seed 0]
        [--confounder 0.0] [--confounder-class indistinct] [--test-fraction 0.3] [--quiet]

The same as `iaiabl synth ...`; see the package iaiabl_lib/data/synthetic/ for what it writes.
"""
import argparse
import sys
from pathlib import Path

# run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iaiabl_lib.data.synthetic import add_cli  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="make_synthetic")
    sub = parser.add_subparsers(dest="command")
    add_cli(sub)
    args = parser.parse_args(["synth", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

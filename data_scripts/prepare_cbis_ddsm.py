#!/usr/bin/env python
"""Import a CBIS-DDSM download (or `iaiabl synth` output) into a prepared dataset.

    python data_scripts/prepare_cbis_ddsm.py --cbis ~/CBIS-DDSM-download --out data/cbis224 [--size 224]
        [--split paper|official] [--seed 0]

The same as `iaiabl prepare ...`; see iaiabl_lib/data/cbis_ddsm.py for what it does.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from iaiabl_lib.data.cbis_ddsm import add_cli  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="prepare_cbis_ddsm")
    sub = parser.add_subparsers(dest="command")
    add_cli(sub)
    args = parser.parse_args(["prepare", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

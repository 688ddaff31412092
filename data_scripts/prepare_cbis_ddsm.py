#!/usr/bin/env python
"""Import a CBIS-DDSM download (or `iaiabl synth` output) into a prepared dataset.

    python data_scripts/prepare_cbis_ddsm.py --cbis ~/CBIS-DDSM-download --out data/cbis224 [--size 224]
        [--split paper|official] [--seed 0]

The same as `iaiabl prepare ...`; see iaiabl_lib/data/cbis_ddsm.py for what it does.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from iaiabl_lib.cli import main as iaiabl_main  # noqa: E402


def main(argv=None) -> int:
    """``iaiabl prepare`` with the same arguments, under the command's error policy (cli.main)."""
    return iaiabl_main(["prepare", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())

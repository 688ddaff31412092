"""The ``iaiabl`` command (DESIGN.md §5). Each subcommand is registered by the module that owns
it (``add_cli``), so its options live next to its code."""
from __future__ import annotations

import argparse
import importlib
import sys

# (module, what it registers); each module defines add_cli(subparsers) and sets a ``func`` default
SUBCOMMAND_MODULES = (
    "iaiabl_lib.data.synthetic",   # synth
    "iaiabl_lib.data.cbis_ddsm",   # prepare
    "iaiabl_lib.data.idc",         # download (real CBIS-DDSM from the Imaging Data Commons)
    "iaiabl_lib.train",            # train
    "iaiabl_lib.evaluate",         # evaluate, compare
    "iaiabl_lib.report",           # explain
    "iaiabl_lib.baselines",        # baseline
    "iaiabl_lib.science",          # science (the confounder experiment of the README)
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iaiabl",
        description="IAIA-BL: interpretable mass-margin classification for mammography "
                    "(Barnett et al. 2021). Data flow: synth | download cbis-ddsm → prepare → "
                    "train → evaluate / explain.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:   # an optional part not installed in this checkout
                continue
            raise
        module.add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        # errors raised on purpose carry a message that names the file or value and what to do
        print(f"iaiabl {args.command}: error: {err}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())

"""The ``iaiabl`` command (docs/DESIGN.md §5). Each subcommand is registered by the module that owns
it (``add_cli``), so its options live next to its code."""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import EXIT_INTERRUPTED, EXIT_USER, USER_ERRORS, describe_os_error

__all__ = ["SUBCOMMAND_MODULES", "build_parser", "INTERRUPT_HINTS", "main", "torch_oom"]

# (module, what it registers); each module defines add_cli(subparsers) and sets a ``func`` default
SUBCOMMAND_MODULES = (
    "iaiabl_lib.data.synthetic",   # synth
    "iaiabl_lib.data.cbis_ddsm",   # prepare
    "iaiabl_lib.data.idc",         # download (real CBIS-DDSM from the Imaging Data Commons)
    "iaiabl_lib.pretrain",         # pretrain (the tiny backbone's pretrained weights)
    "iaiabl_lib.train",            # train
    "iaiabl_lib.evaluate",         # evaluate, compare
    "iaiabl_lib.explain.report",   # explain
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


INTERRUPT_HINTS = {
    "train": "re-run the same command to resume from the last finished epoch",
    "prepare": "nothing was replaced; run the same command again",
}
"""What to do after Ctrl-C, per command (the default: run the command again)."""


def _oom_hint(args: argparse.Namespace) -> str:
    """What to do when the GPU runs out of memory: smaller batches (``--set`` where the command
    has it; the trainer already shrinks its A1 batch itself, ``train.fit_batch_to_memory``)."""
    if hasattr(args, "set"):
        return ("use smaller batches: --set train.batch_size=N (training; the trainer fits it to "
                "the GPU by itself unless train.fit_batch_to_memory=false) and --set "
                "train.eval_batch_size=N (push, validation, evaluation); or free the GPU from other "
                "processes, or --device cpu")
    return "free the GPU from other processes, or run on the CPU with --device cpu"


def main(argv: list[str] | None = None) -> int:
    """Run one command under the error policy of ``iaiabl_lib.errors``: user errors and
    machine faults the user can fix (full disk, read-only folder, GPU memory) print one line and
    exit 2, Ctrl-C exits 130, anything else keeps its traceback (exit 1)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    prefix = f"iaiabl {args.command}: error:"
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        hint = INTERRUPT_HINTS.get(args.command, "run the same command again")
        fresh_line = "\n" if sys.stderr.isatty() else ""      # after a progress bar or the ^C echo
        print(f"{fresh_line}iaiabl {args.command}: interrupted (Ctrl-C); {hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except torch_oom() as err:
        first = str(err).splitlines()[0] if str(err) else "CUDA out of memory"
        print(f"{prefix} the GPU ran out of memory ({first}); {_oom_hint(args)}", file=sys.stderr)
        return EXIT_USER
    except USER_ERRORS as err:
        # errors raised on purpose carry a message that names the file or value and what to do
        print(f"{prefix} {err}", file=sys.stderr)
        return EXIT_USER
    except OSError as err:
        message = describe_os_error(err)
        if message is None:
            raise                                   # not one the user can fix: keep the traceback
        print(f"{prefix} {message}", file=sys.stderr)
        return EXIT_USER
    return int(result or 0)


def torch_oom() -> type[BaseException]:
    """torch's out-of-memory error class, without importing torch for commands that do not."""
    torch = sys.modules.get("torch")
    return getattr(torch, "OutOfMemoryError", _NeverRaised) if torch is not None else _NeverRaised


class _NeverRaised(Exception):
    """Stands in for torch.OutOfMemoryError when torch was never imported."""


if __name__ == "__main__":
    sys.exit(main())

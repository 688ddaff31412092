"""Check (not a test): the paper preset on a GPU with the memory of a smaller card.

Caps this process's CUDA memory (``torch.cuda.set_per_process_memory_fraction``) at each of
``--memory-gib`` (default 15, a 16 GB T4's usable memory, and 6), forces fp16 with loss scaling
(``train.amp_dtype=fp16``, the T4's precision; ``--amp-dtype auto`` keeps the card's own), and asks
the trainer's probe (``train.estimate``: batch fitting + timed steps, no training) what it would do
on a small synthetic set at 224 px. Prints, per cap, the batch the trainer chose, the peak memory of
its steps and its time estimate; the last line is JSON.

    python benchmarks/memory_fit.py                      # on a CUDA machine
    python benchmarks/memory_fit.py --memory-gib 15 6 3
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iaiabl_lib import fastpath  # noqa: E402
from iaiabl_lib.data.cbis_ddsm import prepare  # noqa: E402
from iaiabl_lib.data.synthetic import make_synthetic  # noqa: E402
from iaiabl_lib.train import estimate  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--memory-gib", type=float, nargs="+", default=[15.0, 6.0])
    ap.add_argument("--amp-dtype", default="fp16", choices=["auto", "bf16", "fp16"])
    ap.add_argument("--patients", type=int, default=40)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("memory_fit.py needs a CUDA GPU (it caps the GPU memory of this process)")
        return 2
    dev = torch.device("cuda")
    total = torch.cuda.get_device_properties(dev).total_memory / 2 ** 30
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_synthetic(tmp / "cbis", patients=args.patients, seed=0)
        prepare(tmp / "cbis", tmp / "data", size=224, split="paper", seed=0)
        for gib in args.memory_gib:
            torch.cuda.empty_cache()
            torch.cuda.set_per_process_memory_fraction(min(1.0, gib / total), dev)
            overrides = {"model.pretrained": "none", "train.amp_dtype": args.amp_dtype}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    est = estimate(tmp / "data", "paper", device="cuda", overrides=overrides)
                except RuntimeError as err:       # even the smallest batch failed: say so
                    print(f"cap {gib:.0f} GiB: {err}")
                    results.append({"cap_gib": gib, "error": str(err)})
                    continue
            print(f"cap {gib:.0f} GiB of {total:.0f}: batch {est.batch_size} + {est.fine_batch_size}, "
                  f"peak {est.peak_memory_gib} GiB; {est.describe()}")
            results.append({"cap_gib": gib, **est.to_dict()})
    torch.cuda.set_per_process_memory_fraction(1.0, dev)
    print(json.dumps({"device": fastpath.device_name(dev), "amp_dtype": args.amp_dtype, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

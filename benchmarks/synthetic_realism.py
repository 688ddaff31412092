#!/usr/bin/env python
"""How realistic is the synthetic data? Background power spectrum and lesion contrast, measured
from the files of a CBIS-DDSM-shaped tree (iaiabl_lib.data.synthetic.realism).

    python benchmarks/synthetic_realism.py                      # default set, seed 31, 40 images
    python benchmarks/synthetic_realism.py --seed 0 --images 0  # all images of seed 0
    python benchmarks/synthetic_realism.py --cbis DIR           # an existing tree (also the real
                                                                # CBIS-DDSM download)

Prints, per full image, the exponent beta of the background's radial power spectrum
(P(f) ~ 1/f^beta fitted between 1/32 and 1/4 cycles per pixel on 64-px patches inside the breast
and off the lesions; target 2.5-3.5: Burgess et al. 2001, Heine & Velthuizen 2002) as median and
interquartile range, and the same over a lower and a higher band (1/64-1/8, 1/10-2/5); the lesion contrast ((mean inside the ROI mask - mean of the surround) /
standard deviation of the surround) per CSV subtlety level; and the lesions' equivalent diameters.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iaiabl_lib.data.synthetic import make_synthetic  # noqa: E402
from iaiabl_lib.data.synthetic.realism import BAND, CHECK_BANDS, PATCH, measure_tree  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cbis", type=Path, help="measure this tree instead of generating one")
    ap.add_argument("--seed", type=int, default=31, help="seed of the generated default set")
    ap.add_argument("--patients", type=int, default=None,
                    help="patients of the generated set (default: make_synthetic's default)")
    ap.add_argument("--images", type=int, default=40,
                    help="full images to measure, in CSV order (0 = all; default 40)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.cbis
        if root is None:
            root = Path(tmp) / "cbis"
            t0 = time.perf_counter()
            extra = {} if args.patients is None else {"patients": args.patients}
            make_synthetic(root, seed=args.seed, **extra)
            print(f"generated the default set, seed {args.seed}, in "
                  f"{time.perf_counter() - t0:.1f} s: {root}")
        t0 = time.perf_counter()
        report = measure_tree(root, max_images=args.images or None)
        seconds = time.perf_counter() - t0
    b = report.beta_summary()
    print(f"\nbackground spectrum: beta median {b['median']:.2f} (IQR {b['q25']:.2f}-{b['q75']:.2f})"
          f" over {b['images']} images, {b['patches']} patches of {PATCH} px; "
          f"fit {BAND[0]:.4f}-{BAND[1]:.2f} cycles/px; target 2.5-3.5")
    print("the same spectra fitted over other bands (a power law gives the same beta in each):")
    for band in CHECK_BANDS:
        c = report.beta_summary(band)
        mark = " (the band of record)" if band == BAND else ""
        print(f"  {band[0]:.4f}-{band[1]:.3f} cycles/px: median {c['median']:.2f} "
              f"(IQR {c['q25']:.2f}-{c['q75']:.2f}){mark}")
    print("\nlesion contrast (CNR vs the surround's std) per CSV subtlety:")
    print(f"{'subtlety':>8} {'rows':>5} {'median':>7} {'IQR':>13}")
    for level, c in report.contrast_by_subtlety().items():
        print(f"{level:>8} {c['n']:>5} {c['median']:>7.2f} {c['q25']:>6.2f}-{c['q75']:<6.2f}")
    d = np.array([r["diameter"] for r in report.rows])
    unit = report.rows[0]["unit"] if report.rows else "px"
    if len(d):
        q = np.percentile(d, [5, 50, 95])
        print(f"\nlesion equivalent diameter ({unit}): median {q[1]:.1f}, 5-95 % {q[0]:.1f}-{q[2]:.1f}"
              f" ({len(d)} ROI masks)")
    print(f"\nmeasured in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

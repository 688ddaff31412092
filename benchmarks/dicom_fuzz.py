"""Check (not a test): the long mutation campaign against the DICOM reader (issue 24).

Builds the small valid base files of ``tests/dicom_mutations.py`` (the synthetic generator's full
image, crop and mask; pydicom files for MONOCHROME1, float pixels, LUT sequences, implicit VR,
deflate, RLE), mutates them ``--cases`` times with ``--seed`` (byte flips concentrated in the
header, damaged elements, truncations, splices, hostile header values, transfer syntax UID bytes)
and reads every case with ``dicom.read_dicom`` (a clean read is also displayed with
``window_to_uint8``). Prints the outcome counts (read / refused / escaped), the refusal reasons,
the slowest case, the peak memory of one case (tracemalloc: every allocation, touched or not) and of
the process (peak resident set), the wall time and a fingerprint of the campaign's bytes (equal
seeds, equal fingerprints). The last line is JSON. Exit status 1 when any case escaped with another
exception type, took over 5 s or peaked over 1 GiB.

    python benchmarks/dicom_fuzz.py --cases 10000 --seed 0
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import dicom_mutations as dm  # noqa: E402


def _peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM), MiB."""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--show", type=int, default=5, metavar="N", help="cases with a problem to print in full")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bases = dm.base_files(tmp)
        cases = list(dm.make_cases(bases, args.cases, args.seed))
        fingerprint = dm.fingerprint(cases)
        tracemalloc.start()
        t1 = time.perf_counter()
        outcomes = [dm.run_case(case, tmp) for case in cases]
        reading = time.perf_counter() - t1
        tracemalloc.stop()
    summary = dm.tally(outcomes)
    summary.update(seed=args.seed, wall_seconds=round(time.perf_counter() - t0, 1),
                   reading_seconds=round(reading, 1), peak_rss_mib=round(_peak_rss_mib(), 1),
                   fingerprint=fingerprint[:16], mutators={k: sum(c.mutator == k for c in cases) for k in dm.MUTATORS})
    print(f"{summary['cases']} mutated files (seed {args.seed}, from {len(bases)} bases; "
          f"mutators {summary['mutators']}; fingerprint {summary['fingerprint']})")
    print(f"read cleanly {summary['read']}, refused with DicomError {summary['refused']}, "
          f"escaped with another exception {summary['escaped']}; cases breaking a rule: {summary['problems']}")
    for reason, n in summary["reasons"].items():
        print(f"  {n:6d}  {reason}")
    print(f"slowest case: {summary['slowest_seconds']:.3f} s ({summary['slowest']})")
    peak = summary["peak_bytes"] or 0
    print(f"peak memory of one case (tracemalloc): {peak / 2 ** 20:.0f} MiB ({summary['peak_case']}); "
          f"process peak resident: {summary['peak_rss_mib']:.0f} MiB")
    print(f"wall {summary['wall_seconds']} s ({summary['reading_seconds']} s reading, tracemalloc on)")
    for o in [o for o in outcomes if o.problems][:args.show]:
        print(o.describe())
    print(json.dumps(summary))
    return 1 if summary["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())

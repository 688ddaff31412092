#!/usr/bin/env python
"""Build the CBIS-DDSM label counts table that the synthetic generator samples its labels from.

    python scripts/build_cbis_counts.py [--cbis ../shared/cbis-ddsm] [--check]

Reads the two real CBIS-DDSM mass description tables (``mass_case_description_{train,test}_set.csv``;
TCIA, CC BY 3.0, doi:10.7937/K9/TCIA.2016.7O02S9CY; Lee R.S., Gimenez F., Hoogi A., Miyake K.K.,
Gorovoy M., Rubin D.L., "A curated mammography data set for use in computer-aided detection and
diagnosis research", Scientific Data 4, 170177, 2017) and writes
``iaiabl_lib/data/synthetic/cbis_ddsm_mass_counts.csv``: one line per distinct combination of
(split, mass margins, mass shape, pathology, breast_density, subtlety, assessment) with the number of
CSV rows that carry it. No image, path, UID or patient identifier is copied: only these six label
columns, counted. Lines starting with ``#`` hold the attribution and the between-view statistics
(how often the two views of one abnormality carry different labels, and which pairs of single
margins they are: the real data's reader disagreement). ``--check`` exits 1 when the committed table differs from what the CSVs give.
"""
from __future__ import annotations

import argparse
import csv
import io
import sys
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "iaiabl_lib" / "data" / "synthetic" / "cbis_ddsm_mass_counts.csv"
LABELS = ["mass margins", "mass shape", "pathology", "breast_density", "subtlety", "assessment"]
COLUMNS = ["split", "mass_margins", "mass_shape", "pathology", "breast_density", "subtlety",
           "assessment", "rows"]
ATTRIBUTION = [
    "Label counts of the CBIS-DDSM mass description tables (mass_case_description_train_set.csv,",
    "mass_case_description_test_set.csv), one line per distinct label combination.",
    "Source: Sawyer-Lee R., Gimenez F., Hoogi A., Rubin D. (2016). Curated Breast Imaging Subset of",
    "DDSM [Data set]. The Cancer Imaging Archive. doi:10.7937/K9/TCIA.2016.7O02S9CY; Lee R.S. et al.,",
    "A curated mammography data set for use in computer-aided detection and diagnosis research,",
    "Scientific Data 4, 170177 (2017). Licence: CC BY 3.0 (https://creativecommons.org/licenses/by/3.0/).",
    "Changes: only the six label columns are kept, and counted; cells are copied verbatim (a missing",
    "margin or shape is the string NA, as in the source). Built by scripts/build_cbis_counts.py.",
]


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    missing = [c for c in LABELS + ["patient_id", "left or right breast", "abnormality id"]
               if rows and c not in rows[0]]
    if not rows or missing:
        raise SystemExit(f"{path}: not a CBIS-DDSM mass table (missing columns {missing})")
    return rows


def view_statistics(rows: list[dict]) -> dict[str, int]:
    """Two-view abnormalities (same patient, side, abnormality id) and how many of them carry a
    different margin / subtlety / shape / assessment / pathology in their two rows."""
    by_lesion: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        by_lesion[(r["patient_id"], r["left or right breast"], r["abnormality id"])].append(r)
    two = [v for v in by_lesion.values() if len(v) == 2]
    out = {"abnormalities": len(by_lesion), "two_view": len(two)}
    for col in ("mass margins", "subtlety", "mass shape", "assessment", "pathology"):
        out[f"differ_{col.replace('mass ', '')}"] = sum(a[col] != b[col] for a, b in two)
    return out


def margin_pairs(rows: list[dict]) -> Counter:
    """Two-view abnormalities whose views carry two different single (non-combined, non-NA)
    margins, counted per unordered pair "A|B": which margins readers confuse."""
    by_lesion: dict[tuple, list[str]] = defaultdict(list)
    for r in rows:
        by_lesion[(r["patient_id"], r["left or right breast"], r["abnormality id"])].append(
            r["mass margins"].strip())
    pairs: Counter = Counter()
    for margins in by_lesion.values():
        if len(margins) == 2 and margins[0] != margins[1] and not any(
                "-" in m or m == "NA" for m in margins):
            pairs["|".join(sorted(margins))] += 1
    return pairs


def build(cbis: Path) -> str:
    buf = io.StringIO()
    for line in ATTRIBUTION:
        buf.write(f"# {line}\n")
    lines = []
    for split in ("train", "test"):
        rows = read_rows(cbis / f"mass_case_description_{split}_set.csv")
        stats = view_statistics(rows)
        buf.write(f"# views {split}: " + " ".join(f"{k}={v}" for k, v in stats.items()) + "\n")
        pairs = margin_pairs(rows)
        buf.write(f"# margin pairs {split}: "
                  + " ".join(f"{k}={v}" for k, v in sorted(pairs.items())) + "\n")
        counts = Counter(tuple(r[c].strip() for c in LABELS) for r in rows)
        lines += [[split, *key, n] for key, n in sorted(counts.items())]
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    w.writerows(lines)
    return buf.getvalue()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cbis", type=Path, default=REPO.parent / "shared" / "cbis-ddsm",
                    help="folder with the two real mass CSVs")
    ap.add_argument("--check", action="store_true", help="compare with the committed table")
    args = ap.parse_args(argv)
    text = build(args.cbis)
    if args.check:
        same = OUT.is_file() and OUT.read_text(encoding="utf-8") == text
        print("up to date" if same else f"{OUT} differs from what {args.cbis} gives")
        return 0 if same else 1
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT} ({text.count(chr(10))} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

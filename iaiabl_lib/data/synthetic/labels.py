"""Label sampler: CBIS-DDSM's joint label distribution, and a second reader on borderline cases.

The labels of every synthetic abnormality (mass margins, mass shape, pathology, breast_density,
subtlety, assessment) are drawn *together* from the counts of the real CBIS-DDSM mass tables,
shipped as ``cbis_ddsm_mass_counts.csv`` beside this file (built by
``scripts/build_cbis_counts.py``; TCIA, CC BY 3.0, doi:10.7937/K9/TCIA.2016.7O02S9CY; Lee et al.,
Scientific Data 4, 170177, 2017). Train rows are drawn from the train table, test rows from the test
table, so every dependence the real data hold (margin -> malignancy, density -> subtlety, shape ->
assessment, ...) holds here too. The draw is *systematic* over the table sorted by margin and
pathology: a single uniform offset and n equally spaced points on the cumulative counts, so the
margin and pathology proportions are exact up to rounding even in a small set, and every
combination keeps its probability.

Reader disagreement. In the real tables 16% of the abnormalities seen in two views carry a
different margin in each view (88 of 536 in the train table; the table's header lists which pairs of
single margins), i.e. two readings of one mass. Here a fraction :data:`P_BORDERLINE` of the masses
with a single margin are *borderline*: the renderer draws them between their margin and a partner
margin (chosen with the real pair counts as weights), and each view's CSV cell independently says
the partner with probability :data:`P_SECOND_READER` -- the label a second reader would give.
The subtlety of the two views is shifted by one level as often as the real tables' views differ
(19%); a shift past 1 or 5 is clipped to no change, so in effect about 15% of two-view masses differ.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cbis_format import MAIN_MARGINS

COUNTS_FILE = Path(__file__).with_name("cbis_ddsm_mass_counts.csv")

#: Single margins a mass can be drawn with (the five BI-RADS mass margins).
SINGLE_MARGINS = ("CIRCUMSCRIBED", "ILL_DEFINED", "SPICULATED", "OBSCURED", "MICROLOBULATED")
#: Fraction of single-margin masses drawn between their margin and a partner margin.
P_BORDERLINE = 0.08
#: Probability that one view of a borderline mass carries the partner margin in the CSV.
P_SECOND_READER = 0.5


@dataclass(frozen=True)
class LabelSet:
    """One combination of the six CBIS-DDSM label columns (cells as written in the CSV)."""

    margin: str              # 'mass margins', e.g. "SPICULATED", "OBSCURED-ILL_DEFINED", "NA"
    shape: str               # 'mass shape'
    pathology: str           # MALIGNANT | BENIGN | BENIGN_WITHOUT_CALLBACK
    density: int             # 'breast_density' 1..4
    subtlety: int            # 0..5 (0 occurs twice in the real train table)
    assessment: int          # BI-RADS 0..5


@dataclass(frozen=True)
class CountsTable:
    """The shipped counts of one split: label combinations and their numbers of CSV rows."""

    labels: tuple[LabelSet, ...]
    rows: np.ndarray                      # (K,) int, CSV rows per combination
    views: dict                           # between-view statistics (header line "views")
    pairs: dict                           # {("A", "B"): n} margin pairs of disagreeing views

    @property
    def total(self) -> int:
        return int(self.rows.sum())


def _header_numbers(text: str) -> dict[str, int]:
    return {k: int(v) for k, v in (item.split("=") for item in text.split())}


@functools.lru_cache(maxsize=None)
def counts_table(split: str) -> CountsTable:
    """The CBIS-DDSM label counts of ``split`` ("train" | "test"), sorted by margin, pathology,
    shape, density, subtlety, assessment (the order of the systematic draw)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    views: dict = {}
    pairs: dict = {}
    data = []
    with open(COUNTS_FILE, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    for line in lines:
        if line.startswith(f"# views {split}:"):
            views = _header_numbers(line.split(":", 1)[1])
        elif line.startswith(f"# margin pairs {split}:"):
            pairs = {tuple(k.split("|")): n
                     for k, n in _header_numbers(line.split(":", 1)[1]).items()}
    for r in csv.DictReader(line for line in lines if not line.startswith("#")):
        if r["split"] == split:
            data.append((LabelSet(r["mass_margins"], r["mass_shape"], r["pathology"],
                                  int(r["breast_density"]), int(r["subtlety"]),
                                  int(r["assessment"])), int(r["rows"])))
    if not data:
        raise ValueError(f"{COUNTS_FILE} holds no {split} rows; rebuild it with "
                         f"scripts/build_cbis_counts.py")
    data.sort(key=lambda t: (t[0].margin, t[0].pathology, t[0].shape, t[0].density,
                             t[0].subtlety, t[0].assessment))
    return CountsTable(tuple(d[0] for d in data), np.array([d[1] for d in data]), views, pairs)


def draw_labels(rng: np.random.Generator, n: int, split: str) -> list[LabelSet]:
    """``n`` label sets drawn from ``split``'s joint counts (systematic sampling, then shuffled)."""
    table = counts_table(split)
    if n <= 0:
        return []
    cum = np.cumsum(table.rows) / table.total                         # (K,)
    points = (np.arange(n) + rng.random()) / n                         # (n,) equally spaced
    idx = np.minimum(np.searchsorted(cum, points, side="right"), len(cum) - 1)
    return [table.labels[i] for i in rng.permutation(idx)]


def family(margin: str) -> str:
    """Margin cell -> CIRCUMSCRIBED | ILL_DEFINED | SPICULATED | OBSCURED | MICROLOBULATED |
    COMBINED | NA."""
    if margin in ("", "NA"):
        return "NA"
    return margin if margin in SINGLE_MARGINS else "COMBINED"


def _malignant_fraction(split: str = "train") -> dict[str, float]:
    table = counts_table(split)
    mal, tot = {}, {}
    for labels, n in zip(table.labels, table.rows):
        f = family(labels.margin)
        tot[f] = tot.get(f, 0) + int(n)
        mal[f] = mal.get(f, 0) + int(n) * (labels.pathology == "MALIGNANT")
    return {f: mal[f] / tot[f] for f in sorted(tot)}


#: Fraction of MALIGNANT rows per margin family in the real train table (and so in the synthetic
#: train CSV, up to rounding).
MALIGNANT_FRACTION = _malignant_fraction("train")


def partner_margin(rng: np.random.Generator, margin: str) -> str:
    """The margin a second reader would give a borderline mass of single margin ``margin``, drawn
    with the real (train table) counts of disagreeing views as weights."""
    pairs = counts_table("train").pairs
    options = [(b if a == margin else a, n) for (a, b), n in sorted(pairs.items())
               if margin in (a, b)]
    if not options:
        raise ValueError(f"no reader-disagreement pairs for margin {margin!r}")
    names, weights = zip(*options)
    p = np.asarray(weights, float)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def p_subtlety_differs() -> float:
    """Fraction of two-view abnormalities whose views carry different subtleties (train table)."""
    views = counts_table("train").views
    return views["differ_subtlety"] / views["two_view"]


__all__ = ["LabelSet", "CountsTable", "counts_table", "draw_labels", "family", "partner_margin",
           "p_subtlety_differs", "MALIGNANT_FRACTION", "SINGLE_MARGINS", "P_BORDERLINE",
           "P_SECOND_READER", "COUNTS_FILE", "MAIN_MARGINS"]

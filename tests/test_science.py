"""The science check's claims: each one decided from a seed's figures, and able to fail."""
from __future__ import annotations

import copy

import pytest

from iaiabl_lib import science


def _rows(**changes) -> dict[str, dict]:
    """One seed's rows in the form ``seed_results`` returns, where every claim holds."""
    base = {"average_auroc": 0.90, "lesion_ap": 0.20, "train_auroc": None, "min_prototypes_per_class": 5,
            "prototypes_off_patch": 0}
    rows = {name: dict(base) for _, name in science.ROWS if name != "black-box VGG-style CNN"}
    rows["IAIA-BL"].update(lesion_ap=0.88, average_auroc=0.89, min_prototypes_per_class=3, prototypes_off_patch=3,
                           marker_probability_drop=0.30)
    rows["IAIA-BL without fine-annotation loss"].update(marker_probability_drop=0.60)
    for tag in (" + Grad-CAM", " + Grad-CAM++"):
        rows["black-box VGG-style CNN" + tag] = dict(base, train_auroc=0.97, average_auroc=0.70)
        rows["black-box VGG-style CNN, unconfounded set" + tag] = dict(base, train_auroc=0.96, average_auroc=0.89)
    rows["ProtoPNet, unconfounded set"] = dict(base, average_auroc=0.90)
    for path, value in changes.items():
        name, key = path.split(":")
        for row in [r for n, r in rows.items() if n == name or n.startswith(name + " + ")]:
            row[key] = value
    return rows


def test_every_claim_holds_on_good_figures():
    assert all(science.claims(_rows()).values())


@pytest.mark.parametrize("change, claim", [
    ({"IAIA-BL:lesion_ap": 0.79}, "lesion_ap_at_least_0.80"),
    ({"IAIA-BL:lesion_ap": 0.84}, "lesion_ap_at_least_0.85"),
    ({"ProtoPNet:lesion_ap": 0.70}, "lesion_ap_0.2_above_protopnet"),
    ({"IAIA-BL:average_auroc": 0.84, "ProtoPNet:average_auroc": 0.84}, "auroc_at_least_0.85"),
    ({"ProtoPNet:average_auroc": 0.92}, "auroc_within_0.02_of_protopnet"),
    ({"IAIA-BL:min_prototypes_per_class": 2}, "three_prototypes_per_class"),
    ({"IAIA-BL:prototypes_off_patch": 4}, "at_most_3_off_patch"),
    ({"black-box VGG-style CNN, unconfounded set:train_auroc": 0.94}, "blackbox_fits"),
    ({"black-box VGG-style CNN:train_auroc": 0.94}, "blackbox_fits"),
    ({"IAIA-BL:marker_probability_drop": 0.60}, "marker_reliance_below_without"),
    ({"black-box VGG-style CNN, unconfounded set:average_auroc": 0.87}, "blackbox_parity_unconfounded"),
])
def test_each_claim_can_fail(change, claim):
    verdicts = science.claims(_rows(**change))
    assert verdicts[claim] is False
    assert all(v for k, v in verdicts.items() if k != claim and not (
        claim.startswith("lesion_ap_at_least") and k.startswith("lesion_ap_at_least")))


def test_report_states_the_mean_claim_from_the_numbers():
    per_seed = {0: _rows(), 1: _rows(**{"IAIA-BL:lesion_ap": 0.80})}
    text = science.format_report(copy.deepcopy(per_seed))
    assert "averages 0.84 over the 2 seeds" in text and "does not hold" in text.split("averages")[-1]
    per_seed[1] = _rows(**{"IAIA-BL:lesion_ap": 0.86})
    assert "averages 0.87 over the 2 seeds: the claim \"at least 0.85 on average\" holds." in science.format_report(per_seed)


def test_a_failed_threshold_claim_shows_the_unrounded_figure():
    """0.848 prints as 0.85 in the figure tables; the claims table shows why "≥ 0.85" failed."""
    per_seed = {0: _rows(), 1: _rows(**{"IAIA-BL:lesion_ap": 0.848})}
    line = next(ln for ln in science.format_report(per_seed).splitlines()
                if ln.startswith("| IAIA-BL lesion activation precision ≥ 0.85 |"))
    assert line.split("|")[2:4] == [" yes ", " **no** (0.848) "]
    assert science.claim_figure(per_seed[1], "lesion_ap_at_least_0.85") == 0.848
    # a comparison between models has no single figure to show
    assert science.claim_figure(per_seed[1], "lesion_ap_0.2_above_protopnet") is None
    assert science.claim_mark(per_seed[1], "lesion_ap_0.2_above_protopnet", False) == "**no**"
    assert science.claim_mark(per_seed[1], "auroc_at_least_0.85", None) == "—"


def test_the_marker_claim_is_not_measured_without_the_figures():
    """A record made before the marker figures existed leaves the claim unmeasured, not passed."""
    rows = _rows()
    del rows["IAIA-BL"]["marker_probability_drop"]
    assert science.claims(rows)["marker_reliance_below_without"] is None

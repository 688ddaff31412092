"""Patients -> splits: the paper's random patient-level split, or the tables' own train/test."""
from __future__ import annotations

from collections import Counter

import numpy as np

from iaiabl_lib.config import MARGINS
from ...errors import InputError

__all__ = ["PAPER_FRACTIONS", "OFFICIAL_VAL_FRACTION", "assign_splits"]


PAPER_FRACTIONS = (0.73, 0.12, 0.15)           # train, val, test (patients)
OFFICIAL_VAL_FRACTION = 0.15


def _majority(labels: list[int]) -> int:
    counts = Counter(labels)
    return min(counts, key=lambda c: (-counts[c], c))  # most frequent, ties -> lowest index


def _stratified(patients: dict[str, list[int]], fractions: dict[str, float], rng: np.random.Generator,
                default: str) -> dict[str, str]:
    """Patients -> split, stratified by majority margin. Per stratum of n patients each non-default
    split gets round(fraction * n) patients, at least 1 while the default split keeps >= 1."""
    assignment: dict[str, str] = {}
    for cls in range(len(MARGINS)):
        stratum = sorted(p for p, labels in patients.items() if _majority(labels) == cls)
        stratum = [stratum[i] for i in rng.permutation(len(stratum))]
        start = 0
        for split, fraction in fractions.items():
            room = len(stratum) - start - 1          # keep one for the default split
            take = min(room, max(1, int(round(fraction * len(stratum))))) if room > 0 else 0
            for p in stratum[start:start + take]:
                assignment[p] = split
            start += take
        for p in stratum[start:]:
            assignment[p] = default
    return assignment


def assign_splits(samples: list[dict], mode: str = "paper", seed: int = 0) -> tuple[dict[str, str], int]:
    """Patient -> split for ``samples`` (dicts with 'patient_id', 'label', 'source'
    ('train'|'test' CSV)). ``paper``: patient-level 73/12/15, stratified by majority margin;
    ``official``: the test CSV's patients -> test, ~15 % of the others -> val. Returns
    ``(assignment, moved)``; ``moved``: official-mode patients in both CSVs, all sent to test."""
    rng = np.random.default_rng(seed)
    patients: dict[str, list[int]] = {}
    for s in samples:
        patients.setdefault(s["patient_id"], []).append(s["label"])
    if mode == "paper":
        train, val, test = PAPER_FRACTIONS
        return _stratified(patients, {"test": test, "val": val}, rng, default="train"), 0
    if mode != "official":
        raise InputError(f"unknown split mode {mode!r}; use 'paper' or 'official'")
    in_test = {s["patient_id"] for s in samples if s["source"] == "test"}
    in_train = {s["patient_id"] for s in samples if s["source"] == "train"}
    rest = {p: labels for p, labels in patients.items() if p not in in_test}
    assignment = _stratified(rest, {"val": OFFICIAL_VAL_FRACTION}, rng, default="train")
    assignment.update({p: "test" for p in in_test})
    return assignment, len(in_test & in_train)

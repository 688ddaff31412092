"""How numbers and names are written for a reader (reports, case texts, plot titles, the explorers):
one formatter per thing, torch-free.

    pct(p)        a probability or fraction as a whole percentage: "37 %", "below 1 %", "above 99 %"
    article(w)    "an" before a vowel sound, else "a"
    for_against(points)   "for" a positive (or zero) contribution, "against" a negative one
"""
from __future__ import annotations

__all__ = ["pct", "article", "for_against"]


def pct(p: float) -> str:
    """A probability or a fraction as a whole percentage; "below 1 %" / "above 99 %" rather than a
    rounded 0 % or 100 % that the model did not say."""
    v = 100 * float(p)
    if 0 < v < 0.5:
        return "below 1 %"
    if 99.5 <= v < 100:
        return "above 99 %"
    return f"{v:.0f} %"


def article(word: str) -> str:
    """"an" before a vowel sound, else "a" ("an indistinct", "a spiculated")."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def for_against(points: float) -> str:
    """How a contribution (similarity × weight, margin-logit points) reads: "for" the class when it
    adds points (or none), "against" it when it takes them away."""
    return "for" if float(points) >= 0 else "against"

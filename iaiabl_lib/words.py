"""How numbers and names are written for a reader (reports, case texts, plot titles, the explorers):
one formatter per thing, torch-free.

    pct(p)        a probability or fraction as a whole percentage: "37 %", "below 1 %", "above 99 %"
    article(w)    "an" before a vowel sound, else "a"
"""
from __future__ import annotations

__all__ = ["pct", "article"]


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

"""The explorers' words for a clinician: probabilities as percentages with their meaning, margins as
BI-RADS names them, evidence "for" and "against" a margin in points. No symbols, no equation
numbers, no model-internal names (the chapters keep the mathematics)."""
from __future__ import annotations

import html
from typing import Sequence

from ..config import MARGIN_WORDS, MARGINS
from ..words import article, pct          # the project's one percentage formatter (re-exported here)

__all__ = ["pct", "change", "article", "margin_lines", "malignancy_line", "bar", "class_colour",
           "points_sentence", "distrust_sentence"]


def change(before: float, after: float) -> str:
    """The change between two probabilities in percentage points, as the reader sees them: the
    difference of the two whole percentages shown (15 % → 21 % reads "+6", whatever the unrounded
    figures), so that the columns add up; where one side reads "below 1 %" or "above 99 %", the
    rounded difference of the figures themselves."""
    a, b = pct(before), pct(after)
    if a == b:
        return "no visible change"
    if a.endswith(" %") and a[:-2].isdigit() and b.endswith(" %") and b[:-2].isdigit():
        d = int(b[:-2]) - int(a[:-2])
    else:
        d = 100 * (float(after) - float(before))
        if abs(d) < 0.5:
            return f"{'up' if d > 0 else 'down'} by less than 1 percentage point"
        d = int(round(d))
    return f"{d:+d} percentage point{'' if abs(d) == 1 else 's'}"


def class_colour(c: int) -> str:
    from ..plots import CLASS_COLOURS

    return CLASS_COLOURS[MARGINS[c]]


def bar(p: float, colour: str) -> str:
    w = max(0.0, min(100.0, 100 * float(p)))
    return (f"<span class='iaiabl-bar'><span style='width:{w:.1f}%;background:{colour}'></span></span>")


def margin_lines(prob: Sequence[float], predicted: int | None = None) -> str:
    """One line per margin: "62 % — the model's estimated probability that this margin is
    spiculated (lines radiating from the edge)", the model's call highlighted."""
    rows = []
    for c, p in enumerate(prob):
        text = (f"<b>{pct(p)}</b> — the model's estimated probability that this margin is "
                f"{html.escape(MARGIN_WORDS[MARGINS[c]])}")
        if c == predicted:
            text = f"<span class='iaiabl-call'>{text} <i>(the model's call)</i></span>"
        rows.append(f"<div class='iaiabl-prob iaiabl-margin-{MARGINS[c]}'>{bar(p, class_colour(c))}{text}</div>")
    return "".join(rows)


def malignancy_line(p: float | None) -> str:
    if p is None:
        return ("<div class='iaiabl-prob iaiabl-malignancy'><i>This model has no malignancy estimate "
                "(its malignancy stage was not fitted).</i></div>")
    return (f"<div class='iaiabl-prob iaiabl-malignancy'>{bar(p, '#b2182b')}<b>{pct(p)}</b> — the "
            "model's estimated probability that this mass is malignant, estimated from the margin "
            "evidence alone</div>")


def points_sentence(contribution: float, margin: str) -> str:
    """"adds 1.23 points for spiculated" / "takes 0.08 points away from spiculated"."""
    v = abs(float(contribution))
    if v < 0.005:
        return f"adds nothing to {html.escape(margin)}"
    if contribution > 0:
        return f"adds {v:.2f} points for {html.escape(margin)}"
    return f"takes {v:.2f} points away from {html.escape(margin)}"


def distrust_sentence(health) -> str:
    """One sentence on why to distrust a prototype that failed its health check
    (``explain.prototype_health``), "" when it passed."""
    if health is None or not health.flagged:
        return ""
    where = any("off the mass" in f or "border" in f for f in health.flags)
    weight = any("weight" in f for f in health.flags)
    why = [w for w, on in (("it may be matching background, a marker or the image edge rather than "
                            "the margin of a mass", where),
                           ("its points do not mean what its picture suggests", weight)) if on]
    return "Distrust it: " + "; ".join(health.flags) + ", so " + " and ".join(why) + "."

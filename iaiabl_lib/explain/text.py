"""A case explanation in the words a radiologist reads.

How cases are named: by what the reader was given (the report's title, the explorers' case numbers);
a data set's own case ID is written only labelled as one, "data set ID P_00001_LEFT_CC_1"
(:func:`dataset_id_words`, the explorers' wording too): CBIS-DDSM's de-identified code (an anonymous
patient number given by the data set, the breast, the view, the abnormality number), never a
patient's identity, which the prepared data do not hold."""
from __future__ import annotations


from ..config import MARGIN_WORDS, MARGINS
from ..words import article, for_against, pct
from .case import CaseExplanation

__all__ = ["case_text", "dataset_id_words"]


def dataset_id_words(case_id: str) -> str:
    """"data set ID P_00001_LEFT_CC_1": a data set's own case ID, always labelled as one."""
    return f"data set ID {case_id}"


def _margin_phrase(cls: int) -> str:
    """'a spiculated margin (lines radiating from the edge)'."""
    words = MARGIN_WORDS[MARGINS[cls]]
    name, _, gloss = words.partition(" (")
    return f"{article(name)} {name} margin" + (f" ({gloss}" if gloss else "")


def case_text(expl: CaseExplanation) -> str:
    """A paragraph for a clinician: the margin call with its probabilities, the prototypes that
    drove it (what they are and where they come from, their training case by its data set ID, with
    similarity × weight = points), the malignancy estimate and what to check on the images. The case
    itself is not named: the caller names it (the report's title, the explorer's case number)."""
    probs = expl.margin_prob
    pred = expl.predicted_class
    others = ", ".join(f"{MARGINS[c]} {pct(probs[c])}" for c in range(len(MARGINS)) if c != pred)
    parts = [f"This mass: the model reads the margin as {MARGIN_WORDS[MARGINS[pred]]}, with "
             f"probability {pct(probs[pred])} ({others})."]
    c = expl.explained_class
    if c != pred:
        parts.append(f"The evidence below is the evidence for {MARGINS[c]}, not for the predicted margin.")
    protos = [p for p in expl.prototypes]
    for r, p in enumerate(protos):
        if expl.case_id is not None and p.source_id == expl.case_id:
            origin = "from this very case (it is one of the training cases)"
        elif p.source_id:
            origin = f"from a training case ({dataset_id_words(p.source_id)})"
        else:
            origin = "from a training case"
        lead = ("This mass's margin looks most like" if r == 0 else
                "It also resembles" if p.contribution > 0 else "It resembles")
        sign = for_against(p.contribution)
        parts.append(
            f"{lead} prototype {p.index}, {_margin_phrase(p.cls)} {origin}: similarity "
            f"{p.similarity:.2f} × weight {p.weight:+.2f} = {abs(p.contribution):.2f} points {sign} "
            f"{MARGINS[c]}.")
    if protos:
        shown = sum(p.contribution for p in protos)
        n_all = len(expl.similarity)
        parts.append(f"Together these {len(protos)} prototypes add {shown:.2f} points for {MARGINS[c]}; "
                     f"all {n_all} prototypes together give {MARGINS[c]} a score of "
                     f"{expl.evidence(c):.2f} (" + ", ".join(
                         f"{MARGINS[k]} {expl.evidence(k):.2f}" for k in range(len(MARGINS)) if k != c)
                     + "), and the probabilities are the softmax of these scores.")
    if expl.malignancy_prob is not None:
        parts.append(f"From this margin evidence alone, the model estimates the probability of "
                     f"malignancy at {pct(expl.malignancy_prob)} (a logistic regression on the three "
                     "margin scores, the paper's Eq. 10); it sees nothing but the margin.")
    parts.append("The coloured maps show where in this image each prototype was found; check that "
                 "they lie on the edge of the mass, not on background tissue, a marker or the image border.")
    if expl.true_margin is not None:
        truth = f"The recorded margin of this case is {MARGINS[expl.true_margin]}"
        if expl.true_malignant is not None:
            truth += f" and its pathology {'malignant' if expl.true_malignant else 'benign'}"
        parts.append(truth + ".")
    return " ".join(parts)

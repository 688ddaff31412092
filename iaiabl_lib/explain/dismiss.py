"""What if a prototype is dismissed (the paper's Fig. 1e): the model's own heads recompute the
scores without it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..predict import malignancy_probability, margin_probabilities
from .case import CaseExplanation

__all__ = ["dismissed_probabilities", "Dismissal", "dismissal"]


@torch.no_grad()
def dismissed_probabilities(run, similarity, keep) -> dict[str, Any]:
    """Margin and malignancy probabilities with some prototypes dismissed: their similarity is set
    to 0 and the model's own heads recompute the scores, ``model.heads(similarity * keep)`` (h1,
    then h2). Because h1 is a sum without bias, the margin scores lose exactly the dismissed
    prototypes' contributions.

    similarity (m,), keep (m,) 0/1 (or bool). Returns {"margin_logits" (3,), "margin_prob" (3,),
    "malignancy_prob" (float, or None when the run has no fitted h2)}."""
    model = run.model
    dev = model.prototypes.device
    s = torch.as_tensor(np.asarray(similarity, dtype=np.float32), device=dev)[None]
    k = torch.as_tensor(np.asarray(keep, dtype=np.float32), device=dev)[None]
    logits, mal = model.heads(s * k)
    return {"margin_logits": logits[0].float().cpu().numpy(),
            "margin_prob": margin_probabilities(logits[0].float()),
            "malignancy_prob": malignancy_probability(mal[0].float(), model.malignancy_fitted)}


@dataclass
class Dismissal:
    """The reading of one case with some prototypes dismissed, beside the reading as made."""

    dismissed: tuple[int, ...]
    margin_prob: np.ndarray            # (3,) after the dismissal
    malignancy_prob: float | None
    before_margin_prob: np.ndarray     # (3,) as read
    before_malignancy_prob: float | None

    @property
    def predicted_class(self) -> int:
        return int(np.argmax(self.margin_prob))

    @property
    def call_changes(self) -> bool:
        return self.predicted_class != int(np.argmax(self.before_margin_prob))

    @property
    def largest_change(self) -> float:
        """The largest change of any probability (margins and malignancy), as a fraction."""
        d = np.abs(np.asarray(self.margin_prob) - np.asarray(self.before_margin_prob))
        out = float(d.max()) if d.size else 0.0
        if self.malignancy_prob is not None and self.before_malignancy_prob is not None:
            out = max(out, abs(self.malignancy_prob - self.before_malignancy_prob))
        return out


def dismissal(run, expl: CaseExplanation, dismissed) -> Dismissal:
    """The reading of ``expl``'s case with the prototypes ``dismissed`` (indices) switched off
    (:func:`dismissed_probabilities`)."""
    keep = np.ones(len(expl.similarity), dtype=np.float32)
    dismissed = tuple(int(j) for j in dismissed)
    keep[list(dismissed)] = 0
    after = dismissed_probabilities(run, expl.similarity, keep)
    return Dismissal(dismissed, after["margin_prob"], after["malignancy_prob"],
                     np.asarray(expl.margin_prob), expl.malignancy_prob)


# ---------------------------------------------------------------------------------------------

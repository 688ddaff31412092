"""Explanations of IAIA-BL (Barnett et al. 2021, Fig. 3 and Appendix A).

One file per idea: ``inputs`` (a run's dataset, an ROI crop, a push record), ``case`` (one case),
``cam`` (Eq. 11), ``gallery`` (nearest training patches), ``health`` (where each prototype looks),
``dismiss`` (Fig. 1e), ``text`` (the case in words), ``context`` (the whole mammogram around
the region of interest, with a scale bar; the other views of the same lesion; imported on use,
not here, since it draws figures), ``report`` (``iaiabl explain``: one case,
DICOM or prepared, to a self-contained HTML report; imported on use, not here, since it draws
figures).

Local (one case), "this looks like that":

    margin logit_c = Σ_j  h1[c, j] · s_j          (h1 has no bias)
                   = Σ_j  contribution[c, j]        contribution = similarity × weight

:func:`explain_case` lists the prototypes that contribute most to the predicted class, each with
its similarity s_j (Eq. 2), its h1 weight, the contribution, where in the case it was found (the
prototype activation map, PAM: the similarity map upsampled to the image) and where the prototype
itself comes from (its source training case, box and self-activation, recorded by the push).
:func:`case_text` says the same in words a radiologist reads.

Class level: :func:`class_activation_map`, Appendix A Eq. 11, the similarity-weighted sum of the
PAMs of a class's prototypes, min-max normalised: CAM_c = minmax(Σ_{j: class(p_j) = c} s_j · PAM_j).
It is what the paper compares with GradCAM / GradCAM++ of a black box (Fig. 5).
:func:`logit_contribution_map` (not in the paper) weights the PAMs by h1 instead, in logit points.

Global: :func:`prototype_gallery`, each prototype's nearest training patches (one batched pass of
squared distances over the training split).

Every function takes a loaded run (``train.load_run``) and works on any device; explaining one
case costs a single forward pass (well under 500 ms on a CPU with the tiny preset).
"""
from __future__ import annotations

from .cam import class_activation_map, logit_contribution_map
from .case import CaseExplanation, PrototypeEvidence, explain_case, leading_prototype
from .dismiss import Dismissal, dismissal, dismissed_probabilities
from .gallery import Neighbour, PrototypeGalleryEntry, prototype_gallery
from .health import OFF_LESION_THRESHOLD, PrototypeHealth, margin_band, prototype_health
from .inputs import dataset_for, prepare_image, prototype_record
from .text import case_text

__all__ = [
    "PrototypeEvidence", "CaseExplanation", "explain_case", "class_activation_map",
    "logit_contribution_map",
    "Neighbour", "PrototypeGalleryEntry", "prototype_gallery", "case_text", "dataset_for",
    "prepare_image", "prototype_record", "PrototypeHealth", "OFF_LESION_THRESHOLD", "margin_band",
    "prototype_health", "leading_prototype", "dismissed_probabilities", "Dismissal", "dismissal",
]

"""Class-level maps over a case: Appendix A's class activation map (Eq. 11) and, under its own name,
the logit-contribution map.

Eq. 11 as printed (Barnett et al. 2021, Appendix A): the class activation visualisation of class c
on image i is the sum, over the prototypes of class c, of each prototype's similarity score s_j
(Eq. 2) times its prototype activation map PAM_ij (Eq. 1's map upsampled to the image), min-max
normalised to [0, 1]:

    CAM_ic = minmax( Σ_{j: class(p_j) = c} s_j · PAM_ij ),      minmax(a) = (a − min a) / (max a − min a)

The paper draws it for the true class. It is a picture of *where* the class's prototypes match,
each weighted by how well it matches; it says nothing about the last layer h1.

The logit-contribution map (not in the paper) weights each PAM by h1[c, j] instead and is not
normalised: summed over pixels against the PAMs' own scale it is in margin-logit points per pixel,
so it shows where the *reasoning* for class c comes from, signs included (a prototype whose weight
counts against c paints negative). It is the map earlier versions of this library called Eq. 11.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..model import activation_map, minmax_01
from ..predict import as_images, eval_batches

__all__ = ["class_activation_map", "logit_contribution_map", "eq11", "logit_contribution"]


def _model_of(run_or_model):
    return getattr(run_or_model, "model", run_or_model)


def _class_weighted(maps, coef, prototype_class, cls, size: int, own_class_only: bool) -> Tensor:
    """Σ_j coef[b, j] · PAM_bj over class cls[b]'s prototypes (all with own_class_only=False).
    maps (b, m, H, W), coef (b, m) -> (b, S, S)."""
    maps = torch.as_tensor(maps).float()
    coef = torch.as_tensor(coef, device=maps.device).float()                              # (b, m)
    if own_class_only:
        pclass = torch.as_tensor(prototype_class, device=maps.device).long()              # (m,)
        cls_t = torch.as_tensor(cls, device=maps.device).long().flatten()                  # (b,)
        coef = coef * (pclass[None, :] == cls_t[:, None]).float()
    pam = activation_map(maps, size)                                                      # (b, m, S, S)
    return torch.einsum("bm,bmhw->bhw", coef, pam)


def eq11(maps, scores, prototype_class, cls, size: int) -> Tensor:
    """Appendix A, Eq. 11 from maps already computed (no forward pass): maps (b, m, H, W), the
    similarity scores s_j (b, m) of Eq. 2, prototype_class (m,), cls (b,) -> (b, S, S) in [0, 1].
    The one computation behind :func:`class_activation_map` and ``CaseExplanation.class_activation``."""
    return minmax_01(_class_weighted(maps, scores, prototype_class, cls, size, own_class_only=True))


def logit_contribution(maps, weights, prototype_class, cls, size: int, own_class_only: bool = True) -> Tensor:
    """The logit-contribution map from maps already computed: Σ_j h1[c, j] · PAM_j over class c's
    prototypes (every prototype with own_class_only=False). maps (b, m, H, W), h1 (3, m), cls (b,)
    -> (b, S, S), not normalised."""
    w = torch.as_tensor(weights).float()                                                  # (3, m)
    cls_t = torch.as_tensor(cls).long().flatten()
    return _class_weighted(maps, w[cls_t], prototype_class, cls_t, size, own_class_only)


@torch.no_grad()
def _batched(run, images, cls, batch_size: int, fn) -> np.ndarray:
    """fn(output, model, cls_batch, size) over batches of images in eval mode -> (N, S, S) float32."""
    model = _model_of(run)
    size = int(model.cfg.image_size)
    x = as_images(images, size)
    n = x.shape[0]
    cls_t = torch.as_tensor(cls, dtype=torch.long).flatten()
    if cls_t.numel() == 1:
        cls_t = cls_t.expand(n)
    if cls_t.numel() != n:
        raise ValueError(f"cls: one class or one per image ({n}), got {cls_t.numel()}")
    out = [fn(o, model, cls_t[s:s + batch_size], size).cpu() for s, o in eval_batches(model, x, batch_size)]
    return (torch.cat(out) if out else torch.zeros(0, size, size)).numpy()


def class_activation_map(run, images, cls, batch_size: int = 128) -> np.ndarray:
    """Appendix A, Eq. 11: CAM_c = minmax(Σ_{j: class(p_j) = c} s_j · PAM_j), in [0, 1].

    images: a TensorSet, normalised images (N, 3, S, S), or grey crops (N, S, S) / one (S, S);
    cls: a class index, or one per image ((N,) ints). The paper draws the true class; where the
    truth is unknown (a new case) callers pass the predicted class and say so.
    Returns (N, S, S) float32."""
    return _batched(run, images, cls, batch_size,
                    lambda o, m, c, size: eq11(o.similarity_maps, o.similarity, m.prototype_class, c, size))


def logit_contribution_map(run, images, cls, batch_size: int = 128, own_class_only: bool = True) -> np.ndarray:
    """The h1-weighted sum of class c's PAMs (not in the paper; see the module docstring), in
    margin-logit points per pixel, unnormalised; own_class_only=False sums over every prototype.
    Same arguments as :func:`class_activation_map`. Returns (N, S, S) float32."""
    return _batched(run, images, cls, batch_size,
                    lambda o, m, c, size: logit_contribution(o.similarity_maps, m.margin_head.weight.detach(),
                                                             m.prototype_class, c, size, own_class_only))

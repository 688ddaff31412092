"""Class activation maps (paper Appendix A, Eq. 11): the h1-weighted sum of a class's PAMs."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..model import activation_map
from ..predict import as_images

__all__ = ["class_activation_map", "eq11"]


def _model_of(run_or_model):
    return getattr(run_or_model, "model", run_or_model)


def eq11(maps, weights, prototype_class, cls, size: int, own_class_only: bool = True) -> Tensor:
    """Eq. 11 from similarity maps already computed (no forward pass): maps (b, m, H, W), h1's
    weights (3, m), prototype_class (m,), cls (b,) -> (b, S, S); tensors or arrays. The one
    computation behind :func:`class_activation_map` and ``CaseExplanation.class_activation``."""
    maps = torch.as_tensor(maps).float()
    w = torch.as_tensor(weights, device=maps.device).float()                              # (3, m)
    if own_class_only:
        pclass = torch.as_tensor(prototype_class, device=maps.device).long()
        w = w * (pclass[None, :] == torch.arange(w.shape[0], device=maps.device)[:, None]).float()
    pam = activation_map(maps, size)                                                      # (b, m, S, S)
    return torch.einsum("bm,bmhw->bhw", w[torch.as_tensor(cls, device=maps.device).long()], pam)


@torch.no_grad()
def class_activation_map(run, images, cls, batch_size: int = 128, own_class_only: bool = True) -> np.ndarray:
    """Appendix A, Eq. 11: CAM_c = Σ_{j: class(p_j) = c} h1[c, j] · PAM_j.

    images: a TensorSet, normalised images (N, 3, S, S), or grey crops (N, S, S) / one (S, S);
    cls: a class index, or one per image ((N,) ints; e.g. the predicted classes).
    own_class_only=False sums over all prototypes (off-class weights included).
    Returns (N, S, S) float32 (not normalised: the units of the margin logit per pixel)."""
    model = _model_of(run)
    size = int(model.cfg.image_size)
    x = as_images(images, size)
    n = x.shape[0]
    cls_t = torch.as_tensor(cls, dtype=torch.long).flatten()
    if cls_t.numel() == 1:
        cls_t = cls_t.expand(n)
    if cls_t.numel() != n:
        raise ValueError(f"cls: one class or one per image ({n}), got {cls_t.numel()}")
    dev = model.prototypes.device
    was = model.training
    model.eval()
    out = []
    try:
        for s in range(0, n, batch_size):
            maps = model(x[s:s + batch_size].to(dev)).similarity_maps             # (b, m, H, W)
            out.append(eq11(maps, model.margin_head.weight.detach(), model.prototype_class,
                            cls_t[s:s + batch_size], size, own_class_only).cpu())
    finally:
        model.train(was)
    return (torch.cat(out) if out else torch.zeros(0, size, size)).numpy()


# ---------------------------------------------------------------------------------------------

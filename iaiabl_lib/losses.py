"""The terms of the IAIA-BL objective (Barnett et al. 2021, Eq. 3-8).

Stage A1 minimises   CE + λc·Clst − λs·Sep + λf·Fine        (λc 0.8, λs 0.08, λf 0.001)
Stage A3 minimises   CE + λ1·L1(off-class weights of h1)     (λ1 1e-4)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["REFERENCE_SIZE", "cross_entropy", "cluster_separation", "l1_off_class", "upsampling_matrix",
           "masked_upsampled_sq_norms", "fine_annotation_loss"]


REFERENCE_SIZE = 224
"""Image side at which the paper's λf = 0.001 was set; see ``fine_annotation_loss``."""


def cross_entropy(margin_logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross entropy of the margin logits (B, 3) against labels (B,)."""
    return F.cross_entropy(margin_logits, labels)


def cluster_separation(min_k_dist: Tensor, labels: Tensor, prototype_class: Tensor) -> tuple[Tensor, Tensor]:
    """Eq. 4-6 with the min-k relaxation.

    Clst = mean_i  min_{j: class(p_j) = y_i}  min_k_dist[i, j]
    Sep  = mean_i  min_{j: class(p_j) ≠ y_i}  min_k_dist[i, j]

    where min_k_dist[i, j] is the mean of the k smallest squared distances between prototype j and
    the latent patches of image i. Clst pulls some patch of each image towards a prototype of its
    class; Sep (subtracted in the objective) pushes patches away from other classes' prototypes.

    min_k_dist (B, m), labels (B,), prototype_class (m,) -> (clst, sep), scalars
    """
    own = labels[:, None] == prototype_class[None, :]                  # (B, m) bool
    inf = torch.finfo(min_k_dist.dtype).max
    clst = min_k_dist.masked_fill(~own, inf).min(dim=1).values.mean()
    sep = min_k_dist.masked_fill(own, inf).min(dim=1).values.mean()
    return clst, sep


def l1_off_class(margin_weight: Tensor, prototype_class: Tensor) -> Tensor:
    """L1 norm of the h1 weights that connect a prototype to a class other than its own.

    margin_weight (3, m), prototype_class (m,) -> scalar
    """
    classes = torch.arange(margin_weight.shape[0], device=margin_weight.device)
    off = classes[:, None] != prototype_class[None, :]                 # (3, m)
    return (margin_weight * off).abs().sum()


def upsampling_matrix(n_in: int, n_out: int, device=None, dtype=torch.float32) -> Tensor:
    """U (n_out, n_in): 1-D linear interpolation exactly as ``F.interpolate(..., mode="linear",
    align_corners=False)``; bilinear upsampling of a map s (H, W) is ``U_H s U_Wᵀ`` (separable)."""
    eye = torch.eye(n_in, device=device, dtype=dtype)[:, None, :]               # (n_in, 1, n_in)
    return F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[:, 0].T.contiguous()


def _pair_products(u: Tensor) -> Tensor:
    """V (n_out, n_in²) with V[a, i·n_in + k] = U[a, i] U[a, k]."""
    return (u[:, :, None] * u[:, None, :]).flatten(1)


def masked_upsampled_sq_norms(maps: Tensor, weight: Tensor | None, size: tuple[int, int]) -> Tensor:
    """‖√weight ⊙ up(s)‖²₂ for each low-resolution map s, without materialising the upsampled maps.

    With up(s) = U_H s U_Wᵀ (bilinear, align_corners=False):
        Σ_ab w_ab up(s)_ab²  =  vec(s)ᵀ Q vec(s),   Q_(ij),(kl) = Σ_ab w_ab U_ai U_ak V_bj V_bl
    Q (HW × HW) depends on the mask alone (no gradient) and is built with two matrix products; the
    quadratic form then costs B·m·(HW)² instead of B·m·S² for the upsampling and its backward.

    maps (B, m, H, W); weight (B, S, S) (the squared mask) or None for weight 1 -> (B, m)
    """
    b, m, h, w = maps.shape
    with torch.no_grad():
        uy = upsampling_matrix(h, size[0], maps.device, maps.dtype)              # (S, H)
        ux = upsampling_matrix(w, size[1], maps.device, maps.dtype)              # (S, W)
        vy, vx = _pair_products(uy), _pair_products(ux)                         # (S, H²), (S, W²)
        if weight is None:
            q = (vy.sum(0)[:, None] * vx.sum(0)[None, :])[None]                   # (1, H², W²)
        else:
            q = vy.T @ (weight.to(maps.dtype) @ vx)                              # (B, H², W²)
        # (i, k, j, l) -> (i, j), (k, l)
        q = q.reshape(q.shape[0], h, h, w, w).permute(0, 1, 3, 2, 4).reshape(q.shape[0], h * w, h * w)
    flat = maps.reshape(b, m, h * w)                                             # (B, m, HW)
    return ((flat @ q) * flat).sum(-1)                                           # (B, m)


def fine_annotation_loss(
    activation_map_: Tensor,
    labels: Tensor,
    prototype_class: Tensor,
    relevant_mask: Tensor,
    reference_size: int = REFERENCE_SIZE,
) -> Tensor:
    """Eq. 7, the fine-annotation loss, exactly as printed in the paper: a sum over the batch's images.

    Fine = Σ_i [ Σ_{j: class(p_j) = y_i} ‖m_i ⊙ PAM_{i,j}‖₂ + Σ_{j: class(p_j) ≠ y_i} ‖PAM_{i,j}‖₂ ]

    with m_i the paper's mask (1 = irrelevant, 0 = relevant). We store the opposite,
    ``relevant_mask`` (1 = relevant), and convert here, once: m_i = 1 − relevant_mask.
    Own-class prototypes are thus penalised for activation outside the relevant region (the lesion
    for lesion-scale masks; the spicules or the boundary band for fine masks); other-class
    prototypes are penalised for activation anywhere.

    Norm convention: ‖·‖₂ is the Frobenius norm of one prototype's (S × S) activation map (one
    norm per prototype, as printed; the authors' code takes one norm per group of prototypes,
    which is smaller). That norm grows linearly with the side S for the same relative pattern, so
    it is multiplied by ``reference_size / S``: the loss has the size it would have at the paper's
    224 px, and the paper's λf = 0.001 keeps its meaning at any resolution (the tiny preset's 64 px
    included).

    Sum, not mean, over the images (as Eq. 7 is printed): λf multiplies a term that grows with the
    number of masked images in the batch, as in the paper, where a batch holds 75 + 10 images.
    (Until 2026-11 this function averaged over the images, which made the paper's λf = 0.001 85
    times weaker than the paper's at its batch size; see chapter 7.)

    activation_map_: either the PAMs (B, m, S, S) at the mask size, or the low-resolution
        similarity maps (B, m, H, W): then the norms of their bilinear upsampling (``activation_map``)
        are computed exactly as quadratic forms (``masked_upsampled_sq_norms``), which is much
        cheaper than upsampling (the training step uses this).
    labels (B,), prototype_class (m,), relevant_mask (B, 1, S, S) or (B, S, S), 1 = relevant.
    -> scalar
    """
    if relevant_mask.ndim == 3:
        relevant_mask = relevant_mask[:, None]
    size = tuple(relevant_mask.shape[-2:])
    own = (labels[:, None] == prototype_class[None, :]).to(activation_map_.dtype)  # (B, m)
    irrelevant = 1.0 - relevant_mask.to(activation_map_.dtype)          # m_i, (B, 1, S, S)
    if tuple(activation_map_.shape[-2:]) != size:
        sq_own = masked_upsampled_sq_norms(activation_map_, irrelevant[:, 0] ** 2, size)   # (B, m)
        sq_all = masked_upsampled_sq_norms(activation_map_, None, size)                    # (B, m)
        sq = own * sq_own + (1 - own) * sq_all
        norms = sq.clamp_min(1e-12).sqrt()                               # (B, m)
    else:
        # own class: outside the relevant region; other classes: everywhere
        weight = own[:, :, None, None] * irrelevant + (1 - own)[:, :, None, None]      # (B, m, S, S)
        norms = (weight * activation_map_).flatten(2).norm(dim=-1)     # (B, m)
    scale = reference_size / float(size[-1])
    return norms.sum() * scale                                           # Σ_i Σ_j

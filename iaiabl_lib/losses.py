"""The terms of the IAIA-BL objective (Barnett et al. 2021, Eq. 3-8).

Stage A1 minimises   CE + λc·Clst − λs·Sep + λf·Fine        (λc 0.8, λs 0.08, λf 0.001)
Stage A3 minimises   CE + λ1·L1(off-class weights of h1)     (λ1 1e-4)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import FINE_NORMS
from .errors import InputError

__all__ = ["REFERENCE_SIZE", "FINE_NORMS", "cross_entropy", "cluster_separation", "lesion_pull", "l1_off_class", "upsampling_matrix",
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


def lesion_pull(sq_dist: Tensor, labels: Tensor, prototype_class: Tensor, lesion_cells: Tensor) -> Tensor:
    """A departure from the paper (``loss.remember``, off by default): every own-class prototype is
    pulled towards the nearest lesion patch of each image of its class,

        Pull = mean over (i, j: class(p_j) = y_i) of  min_{l in lesion cells of i} d_{i,j,l}

    Eq. 4's cluster cost pulls only the *nearest* own-class prototype; the others feel Eq. 7's
    push and nothing else, and can leave every patch (chapter 7). This is the lesion-restricted
    cluster term that ProtoPDebug's "remembering" loss (Bontempelli et al. 2023) stands for: it
    keeps valid prototypes active on valid evidence.

    sq_dist (B, m, H, W), labels (B,), prototype_class (m,), lesion_cells (B, H, W) bool -> scalar
    """
    own = labels[:, None] == prototype_class[None, :]                       # (B, m)
    rows = lesion_cells.flatten(1).any(dim=1)                                # (B,) images with a lesion cell
    inf = torch.finfo(sq_dist.dtype).max
    d = sq_dist.flatten(2).masked_fill(~lesion_cells.flatten(1)[:, None, :], inf).min(dim=-1).values   # (B, m)
    pairs = own & rows[:, None]
    return d[pairs].mean() if pairs.any() else sq_dist.new_zeros(())


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
    norm: str = "group",
) -> Tensor:
    """Eq. 7, the fine-annotation loss: a sum over the batch's images.

    As printed in the paper (``norm="prototype"``), one norm per prototype:

        Fine = Σ_i [ Σ_{j: class(p_j) = y_i} ‖m_i ⊙ PAM_{i,j}‖₂ + Σ_{j: class(p_j) ≠ y_i} ‖PAM_{i,j}‖₂ ]

    As the authors' code computes it (``norm="group"``, the default; their train_and_test.py),
    one norm per *group* of prototypes: the classes before the label, the label's own class, the
    classes after it (with prototypes stored class by class, their three slices):

        Fine = Σ_i [ ‖PAM_{i, c < y_i}‖₂ + ‖m_i ⊙ PAM_{i, c = y_i}‖₂ + ‖PAM_{i, c > y_i}‖₂ ]

    where ‖·‖₂ of a group is the Frobenius norm over all its maps, i.e. the square root of the sum
    of its prototypes' squared norms. We follow the code, because it produced the paper's numbers
    and because it is what measurements here support: a prototype that has left every patch still
    feels the printed form's push at full strength (the gradient of ‖a‖ has unit norm however
    small a is), while under the group norm its share of the group's norm fades as it leaves: the
    flight limits itself (chapter 7, "Which norm", measures both with ``train.push_to_pull``). ProtoPNeXt (the authors' group's later library) keeps the
    group form as its default ("serial").

    m_i is the paper's mask (1 = irrelevant, 0 = relevant). We store the opposite,
    ``relevant_mask`` (1 = relevant), and convert here, once: m_i = 1 − relevant_mask.
    Own-class prototypes are thus penalised for activation outside the relevant region (the lesion
    for lesion-scale masks; the spicules or the boundary band for fine masks); other-class
    prototypes are penalised for activation anywhere.

    Size: a norm grows linearly with the side S for the same relative pattern, so it is multiplied
    by ``reference_size / S``: the loss has the size it would have at the paper's 224 px, and the
    paper's λf = 0.001 keeps its meaning at any resolution (the tiny preset's 64 px included).

    Sum, not mean, over the images (as Eq. 7 is printed and as the authors' code sums): λf
    multiplies a term that grows with the number of masked images in the batch, as in the paper,
    where a batch holds 75 + 10 images.

    activation_map_: either the PAMs (B, m, S, S) at the mask size, or the low-resolution
        similarity maps (B, m, H, W): then the norms of their bilinear upsampling (``activation_map``)
        are computed exactly as quadratic forms (``masked_upsampled_sq_norms``), which is much
        cheaper than upsampling (the training step uses this).
    labels (B,), prototype_class (m,), relevant_mask (B, 1, S, S) or (B, S, S), 1 = relevant.
    -> scalar
    """
    if norm not in FINE_NORMS:
        raise InputError(f"fine-annotation norm {norm!r}: choose one of {', '.join(FINE_NORMS)}")
    if relevant_mask.ndim == 3:
        relevant_mask = relevant_mask[:, None]
    size = tuple(relevant_mask.shape[-2:])
    own = (labels[:, None] == prototype_class[None, :]).to(activation_map_.dtype)  # (B, m)
    irrelevant = 1.0 - relevant_mask.to(activation_map_.dtype)          # m_i, (B, 1, S, S)
    if tuple(activation_map_.shape[-2:]) != size:
        sq_own = masked_upsampled_sq_norms(activation_map_, irrelevant[:, 0] ** 2, size)   # (B, m)
        sq_all = masked_upsampled_sq_norms(activation_map_, None, size)                    # (B, m)
        sq = own * sq_own + (1 - own) * sq_all                            # (B, m)
    else:
        # own class: outside the relevant region; other classes: everywhere
        weight = own[:, :, None, None] * irrelevant + (1 - own)[:, :, None, None]      # (B, m, S, S)
        sq = (weight * activation_map_).flatten(2).pow(2).sum(-1)         # (B, m)
    if norm == "prototype":
        total = sq.clamp_min(1e-12).sqrt().sum()                          # Σ_i Σ_j ‖·‖
    else:
        # group g = sign(class(p_j) − y_i): −1 before the label, 0 the label's own, +1 after
        group = torch.sign(prototype_class[None, :] - labels[:, None]) + 1           # (B, m) in {0, 1, 2}
        sq_group = sq.new_zeros(sq.shape[0], 3).scatter_add_(1, group, sq)           # (B, 3)
        present = sq.new_zeros(sq.shape[0], 3).scatter_add_(1, group, torch.ones_like(sq)) > 0
        total = (sq_group.clamp_min(1e-12).sqrt() * present).sum()        # Σ_i Σ_g ‖·‖ (empty groups: 0)
    return total * (reference_size / float(size[-1]))

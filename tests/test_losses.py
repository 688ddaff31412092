"""The terms of the objective (Eq. 3-8) against hand-computed values."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from iaiabl_lib.losses import (cluster_separation, cross_entropy, fine_annotation_loss, l1_off_class,
                               masked_upsampled_sq_norms, upsampling_matrix)
from iaiabl_lib.model import activation_map


def test_cross_entropy_is_torch_cross_entropy():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    labels = torch.tensor([0, 2])
    expected = (-(2 - math.log(math.exp(2) + 1 + math.exp(-1))) + math.log(3)) / 2
    assert math.isclose(float(cross_entropy(logits, labels)), expected, rel_tol=1e-6)


def test_cluster_separation_on_a_2x4_toy():
    # 2 images × 4 prototypes (classes 0, 0, 1, 1)
    min_k = torch.tensor([[1.0, 2.0, 3.0, 4.0],
                          [8.0, 6.0, 7.0, 5.0]])
    clst, sep = cluster_separation(min_k, torch.tensor([0, 1]), torch.tensor([0, 0, 1, 1]))
    # image 0 (class 0): own min(1, 2) = 1, other min(3, 4) = 3
    # image 1 (class 1): own min(7, 5) = 5, other min(8, 6) = 6
    assert float(clst) == pytest.approx((1 + 5) / 2)
    assert float(sep) == pytest.approx((3 + 6) / 2)


def test_l1_off_class_hand_value():
    w = torch.tensor([[1.0, -2.0, 0.5],
                      [-1.0, 3.0, -0.25],
                      [4.0, 0.0, 1.0]])                                       # (3 classes, 3 prototypes)
    pclass = torch.tensor([0, 1, 2])
    # off-class entries: column 0 rows 1, 2: 1 + 4; column 1 rows 0, 2: 2 + 0; column 2 rows 0, 1: 0.5 + 0.25
    assert float(l1_off_class(w, pclass)) == pytest.approx(7.75)


def test_fine_loss_toy_map_by_hand():
    # one image of class 0, two prototypes (classes 0 and 1), S = 4
    pam = torch.stack([torch.full((4, 4), 1.0), torch.full((4, 4), 2.0)])[None]   # (1, 2, 4, 4)
    relevant = torch.zeros(1, 1, 4, 4)
    relevant[..., :2, :2] = 1                                                # 4 relevant pixels
    loss = fine_annotation_loss(pam, torch.tensor([0]), torch.tensor([0, 1]), relevant)
    # own prototype: ‖1 over the 12 irrelevant pixels‖ = √12; other: ‖2 everywhere‖ = √(16·4) = 8
    # scaled by 224 / S = 56
    assert float(loss) == pytest.approx(56 * (math.sqrt(12) + 8), rel=1e-6)
    # a sum over the batch's images (Eq. 7 as printed), and the reference size is a parameter
    two = fine_annotation_loss(pam.repeat(2, 1, 1, 1), torch.tensor([0, 0]), torch.tensor([0, 1]),
                               relevant.repeat(2, 1, 1, 1), reference_size=4)
    assert float(two) == pytest.approx(2 * (math.sqrt(12) + 8), rel=1e-6)
    # a (B, S, S) mask is accepted too
    assert float(fine_annotation_loss(pam, torch.tensor([0]), torch.tensor([0, 1]), relevant[:, 0])) == \
        pytest.approx(float(loss))


def _authors_fine_cost(upsampled, label, irrelevant, per_class):
    """The fine-annotation cost exactly as the authors' train_and_test.py loops it (prototypes
    stored class by class): per image, one torch.norm over the prototypes of the classes before
    the label, one over the label's own (masked), one over the classes after it."""
    total = 0.0
    for i in range(upsampled.shape[0]):
        y = int(label[i])
        total = total + torch.norm(upsampled[i, :y * per_class]) \
            + torch.norm(upsampled[i, y * per_class:(y + 1) * per_class] * irrelevant[i]) \
            + torch.norm(upsampled[i, (y + 1) * per_class:])
    return total


@pytest.mark.parametrize("low_res", [False, True])
def test_fine_loss_group_norm_is_the_authors_code(low_res):
    """norm="group" (the default) equals the authors' loop, from full-size PAMs and from low-res
    maps; norm="prototype" is one norm per prototype (the paper's printed Eq. 7), never smaller."""
    torch.manual_seed(1)
    maps = (torch.rand(4, 9, 5, 5, dtype=torch.float64) * 2).requires_grad_()
    labels, pclass = torch.tensor([0, 1, 2, 1]), torch.arange(3).repeat_interleave(3)
    relevant = (torch.rand(4, 1, 20, 20, dtype=torch.float64) > 0.6).double()
    up = activation_map(maps, 20)
    ours = fine_annotation_loss(maps if low_res else up, labels, pclass, relevant, reference_size=20)
    ref = _authors_fine_cost(up, labels, 1 - relevant, per_class=3)
    assert float(ours) == pytest.approx(float(ref), rel=1e-9)
    (g_ours,) = torch.autograd.grad(ours, maps)
    (g_ref,) = torch.autograd.grad(ref, maps)
    assert torch.allclose(g_ours, g_ref, rtol=1e-7, atol=1e-12)
    per_proto = fine_annotation_loss(up, labels, pclass, relevant, reference_size=20, norm="prototype")
    assert float(per_proto) > float(ours)
    with pytest.raises(ValueError, match="fine-annotation norm"):
        fine_annotation_loss(up, labels, pclass, relevant, norm="per-pixel")


def test_fine_loss_group_norm_push_fades_on_a_prototype_that_left():
    """Why the group norm limits the flight: the gradient of Eq. 7 on a prototype whose map is
    tiny next to its group's fades with it under the group norm, not under the printed form."""
    maps = torch.full((1, 3, 4, 4), 1.0, dtype=torch.float64)
    maps[0, 0] = 1e-3                                                   # prototype 0 has left
    maps.requires_grad_()
    labels, pclass = torch.tensor([2]), torch.tensor([0, 0, 1])         # all three are other-class
    relevant = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    grads = {}
    for norm in ("group", "prototype"):
        (g,) = torch.autograd.grad(fine_annotation_loss(maps, labels, pclass, relevant, norm=norm), maps)
        grads[norm] = float(g[0, 0].norm())
    assert grads["prototype"] == pytest.approx(224 / 4, rel=1e-9)      # unit gradient × the rescale
    assert grads["group"] < 1e-2 * grads["prototype"]


def test_fine_loss_from_low_resolution_maps_is_exact():
    """The quadratic-form path (low-res maps) equals upsampling then masking, values and gradients."""
    torch.manual_seed(0)
    maps = (torch.rand(3, 6, 5, 7, dtype=torch.float64) * 3).requires_grad_()
    labels, pclass = torch.tensor([0, 2, 1]), torch.tensor([0, 0, 1, 1, 2, 2])
    mask = torch.rand(3, 1, 40, 56, dtype=torch.float64)                     # soft mask, non-square
    fast = fine_annotation_loss(maps, labels, pclass, mask)
    (g_fast,) = torch.autograd.grad(fast, maps)
    slow = fine_annotation_loss(activation_map(maps, (40, 56)), labels, pclass, mask)
    (g_slow,) = torch.autograd.grad(slow, maps)
    assert torch.allclose(fast, slow, rtol=1e-10)
    assert torch.allclose(g_fast, g_slow, rtol=1e-8, atol=1e-12)


def test_upsampling_matrix_is_bilinear_interpolation():
    s = torch.rand(2, 3, 4, 6, dtype=torch.float64)
    uy, ux = upsampling_matrix(4, 13, dtype=torch.float64), upsampling_matrix(6, 9, dtype=torch.float64)
    assert torch.allclose(uy @ s @ ux.T, F.interpolate(s, size=(13, 9), mode="bilinear", align_corners=False))
    w = torch.rand(2, 13, 9, dtype=torch.float64)
    direct = (w[:, None] * activation_map(s, (13, 9)) ** 2).sum((-1, -2))
    assert torch.allclose(masked_upsampled_sq_norms(s, w, (13, 9)), direct)


def test_lesion_pull_pulls_every_own_class_prototype_to_its_nearest_lesion_patch():
    """losses.lesion_pull (loss.remember, not the paper): the mean over (image, own-class
    prototype) of the distance to the nearest lesion cell; other-class prototypes and images
    without a lesion cell do not count."""
    from iaiabl_lib.losses import lesion_pull

    sq = torch.tensor([[[[1.0, 5.0], [7.0, 2.0]], [[3.0, 0.5], [4.0, 9.0]], [[8.0, 8.0], [8.0, 8.0]]],
                       [[[6.0, 6.0], [6.0, 6.0]], [[6.0, 6.0], [6.0, 6.0]], [[6.0, 6.0], [6.0, 6.0]]]])  # (2, 3, 2, 2)
    labels, pclass = torch.tensor([0, 1]), torch.tensor([0, 0, 1])
    cells = torch.tensor([[[False, True], [True, False]], [[False, False], [False, False]]])
    # image 0 (class 0): prototypes 0 and 1 own; nearest lesion cell: min(5, 7) = 5 and min(0.5, 4) = 0.5
    assert float(lesion_pull(sq, labels, pclass, cells)) == pytest.approx((5 + 0.5) / 2)
    assert float(lesion_pull(sq, labels, pclass, torch.zeros_like(cells))) == 0.0

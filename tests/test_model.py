"""The network's pure functions (Eq. 1, 2, distances, PAM) against hand-computed values, h1's
initialisation, shapes and input checks."""
from __future__ import annotations

import math

import pytest
import torch

from iaiabl_lib.config import get_preset
from iaiabl_lib.model import (IAIABL, activation_map, bottomk_average, log_similarity, squared_distances,
                              topk_average, topk_for)


def test_log_similarity_hand_values():
    d = torch.tensor([0.0, 1.0, 3.0, 1e6], dtype=torch.float64)
    s = log_similarity(d)
    expected = [math.log(1 / 1e-4), math.log(2 / 1.0001), math.log(4 / 3.0001), math.log((1e6 + 1) / (1e6 + 1e-4))]
    assert torch.allclose(s, torch.tensor(expected, dtype=torch.float64), rtol=1e-9)
    assert math.isclose(float(log_similarity(torch.tensor(0.0), eps=0.5)), math.log(2.0), rel_tol=1e-6)
    assert torch.all(s[:-1] > s[1:])      # decreasing in the distance


def test_topk_average_hand_values():
    maps = torch.tensor([[[[1.0, 4.0], [3.0, 2.0]], [[0.0, -1.0], [5.0, 5.0]]]])   # (1, 2, 2, 2)
    assert torch.allclose(topk_average(maps, 2), torch.tensor([[3.5, 5.0]]))
    assert torch.allclose(topk_average(maps, 1), maps.flatten(2).max(-1).values)   # k = 1: max pooling
    assert torch.allclose(topk_average(maps, 4), maps.flatten(2).mean(-1))
    assert torch.allclose(bottomk_average(maps, 2), torch.tensor([[1.5, -0.5]]))
    with pytest.raises(ValueError, match="top-k"):
        topk_average(maps, 5)


def test_topk_for_paper_value():
    cfg = get_preset("paper").model
    assert topk_for(cfg, 196) == 5            # the paper's text (the authors' code passes 9)
    assert topk_for(get_preset("tiny").model, 64) == 3


def test_squared_distances_match_cdist():
    torch.manual_seed(0)
    z = torch.rand(3, 8, 4, 5, dtype=torch.float64)
    p = torch.rand(6, 8, dtype=torch.float64)
    d = squared_distances(z, p)                                               # (3, 6, 4, 5)
    flat = z.permute(0, 2, 3, 1).reshape(3, 20, 8)
    ref = torch.cdist(flat, p[None].expand(3, -1, -1)) ** 2                   # (3, 20, 6)
    assert torch.allclose(d.permute(0, 2, 3, 1).reshape(3, 20, 6), ref, atol=1e-10)


def test_activation_map_upsamples_bilinearly():
    maps = torch.full((2, 3, 4, 4), 2.5)
    assert torch.allclose(activation_map(maps, 16), torch.full((2, 3, 16, 16), 2.5))
    assert activation_map(torch.rand(1, 2, 3, 3), (12, 8)).shape == (1, 2, 12, 8)


@pytest.mark.parametrize("name, other", [("tiny", -1.0), ("tiny-protopnet", -0.5)])
def test_margin_head_init(name, other):
    model = IAIABL(get_preset(name).model)
    w = model.margin_head.weight                                              # (3, m)
    own = model.prototype_class[None, :] == torch.arange(3)[:, None]
    assert torch.all(w[own] == 1.0) and torch.all(w[~own] == other)
    assert model.prototype_class.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert model.margin_head.bias is None
    assert torch.all(model.malignancy_head.weight == 0) and torch.all(model.malignancy_head.bias == 0)


def test_forward_shapes_and_consistency():
    torch.manual_seed(0)
    model = IAIABL(get_preset("tiny").model).eval()
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    assert out.margin_logits.shape == (2, 3) and out.malignancy_logit.shape == (2,)
    assert out.similarity.shape == (2, 15) and out.similarity_maps.shape == (2, 15, 8, 8)
    assert out.sq_dist.shape == (2, 15, 8, 8) and out.min_k_dist.shape == (2, 15)
    assert model.grid_size() == 8
    assert torch.allclose(out.similarity, topk_average(log_similarity(out.sq_dist), 3))
    assert torch.allclose(out.min_k_dist, bottomk_average(out.sq_dist, 3))
    assert torch.allclose(out.margin_logits, out.similarity @ model.margin_head.weight.T)


def test_prototype_layer_stays_fp32_under_autocast():
    torch.manual_seed(0)
    model = IAIABL(get_preset("tiny").model).eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(2, 3, 64, 64))
    assert out.sq_dist.dtype == torch.float32 and out.margin_logits.dtype == torch.float32


@pytest.mark.parametrize("shape", [(2, 1, 64, 64), (2, 64, 64), (3, 64, 64, 3)])
def test_wrong_shape_input_is_refused(shape):
    model = IAIABL(get_preset("tiny").model)
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 3, S, S\)"):
        model(torch.zeros(shape))

"""Stage A2 (push) and duplicate pruning, on small in-memory tensors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from iaiabl_lib.config import get_preset
from iaiabl_lib.model import IAIABL
from iaiabl_lib.prune import duplicate_groups, prune_duplicates, resize_prototypes
from iaiabl_lib.push import (ReceptiveField, high_activation_box, nearest_patches, push_prototypes,
                             receptive_field, rf_box, select)


@pytest.fixture(scope="module")
def toy():
    """A tiny model and 12 random 64-px images, 4 per class."""
    torch.manual_seed(0)
    model = IAIABL(get_preset("tiny").model)
    images = torch.randn(12, 3, 64, 64)
    labels = torch.arange(3).repeat(4)
    return model, images, labels


def _linearised(net: nn.Module) -> nn.Sequential:
    """The same geometry with all-positive weights, no biases, average pooling and no
    nonlinearities: the gradient of a latent cell then covers its whole receptive field."""
    layers = []
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            conv = nn.Conv2d(1, 1, m.kernel_size, m.stride, m.padding, m.dilation, bias=False)
            nn.init.constant_(conv.weight, 1.0)
            layers.append(conv)
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            layers.append(nn.AvgPool2d(m.kernel_size, m.stride, m.padding))
    return nn.Sequential(*layers)


@pytest.mark.parametrize("net", [
    get_preset("tiny").model,                                                       # the tiny backbone
    nn.Sequential(nn.Conv2d(1, 1, 5, stride=2, padding=1), nn.MaxPool2d(3, 2, 1),
                  nn.Conv2d(1, 1, 3, padding=2, dilation=2)),
])
def test_receptive_field_matches_gradient_support(net):
    if not isinstance(net, nn.Module):
        model = IAIABL(net)
        net = nn.Sequential(model.backbone, model.add_on)
    lin = _linearised(net)
    rf = receptive_field(net)
    size = 48
    x = torch.ones(1, 1, size, size, requires_grad=True)
    out = lin(x)
    h = out.shape[-1]
    for row, col in [(0, 0), (h // 2, h // 3), (h - 1, h - 1)]:
        (g,) = torch.autograd.grad(out[0, 0, row, col], x, retain_graph=True)
        ys, xs = torch.nonzero(g[0, 0] != 0, as_tuple=True)
        support = [int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1]
        assert rf_box(rf, row, col, size) == support


def test_tiny_receptive_field_numbers():
    model = IAIABL(get_preset("tiny").model)
    rf = receptive_field(nn.Sequential(model.backbone, model.add_on))
    assert rf == ReceptiveField(jump=8.0, size=38.0, start=3.5)
    assert rf_box(rf, 0, 0, 64) == [0, 0, 23, 23]          # centre 3.5 ± 18.5, clipped
    assert rf_box(rf, 4, 7, 64) == [17, 41, 55, 64]


def test_high_activation_box():
    pam = torch.zeros(2, 10, 10)
    pam[0, 2:4, 5:9] = 1.0          # 8 hot pixels of 100: above the 95th percentile
    pam[1] = torch.arange(100.0).reshape(10, 10)   # top 5 % = the last 5 pixels of the last row
    assert high_activation_box(pam).tolist() == [[2, 5, 4, 9], [9, 5, 10, 10]]


def test_push_projects_onto_nearest_same_class_patch(toy):
    model, images, labels = toy
    model = IAIABL(model.cfg)
    model.load_state_dict(toy[0].state_dict())
    before = model.prototypes.detach().clone()
    with torch.no_grad():
        z = model.features(images)                                           # (12, C, 8, 8)
    result = push_prototypes(model, images, labels, ids=[f"roi{i}" for i in range(12)],
                             source_index=np.arange(100, 112), batch_size=5, epoch=3)
    patches = z.permute(0, 2, 3, 1)                                           # (12, 8, 8, C)
    for j, rec in enumerate(result.records):
        c = int(model.prototype_class[j])
        assert rec["class"] == c and labels[rec["source_index"] - 100] == c
        row, col = rec["patch"]
        # the prototype IS that latent patch of a training image of its class
        assert torch.allclose(model.prototypes[j], patches[rec["source_index"] - 100, row, col], atol=1e-6)
        # and that patch was the nearest to the old prototype among all patches of its class
        own = patches[labels == c].reshape(-1, patches.shape[-1])
        d = ((own - before[j]) ** 2).sum(-1)
        assert rec["sq_distance"] == pytest.approx(float(d.min()), rel=1e-4, abs=1e-5)
        assert float(((patches[rec["source_index"] - 100, row, col] - before[j]) ** 2).sum()) == \
            pytest.approx(float(d.min()), rel=1e-4, abs=1e-5)
        assert rec["source_id"] == f"roi{rec['source_index'] - 100}" and rec["epoch"] == 3
        y0, x0, y1, x1 = rec["rf_box"]
        assert 0 <= y0 < y1 <= 64 and 0 <= x0 < x1 <= 64
        y0, x0, y1, x1 = rec["high_activation_box"]
        assert 0 <= y0 < y1 <= 64 and 0 <= x0 < x1 <= 64
    a = result.arrays
    assert a["self_activation"].shape == (15, 64, 64) and a["source_image"].shape == (15, 64, 64)
    assert a["source_image"].dtype == np.uint8
    # self-activation peaks where the prototype sits: its own patch is an exact match (d = 0)
    with torch.no_grad():
        src = model(images[a["source_index"] - 100]).sq_dist                  # (15, 15, 8, 8)
    for j in range(15):
        assert float(src[j, j].min()) < 1e-4


def test_nearest_patches_chunking_is_irrelevant(toy):
    model, images, labels = toy
    a = nearest_patches(model, images, labels, batch_size=256)
    b = nearest_patches(model, images, labels, batch_size=1)
    assert torch.equal(a.image, b.image) and torch.equal(a.patch, b.patch)
    assert torch.allclose(a.vector, b.vector)


def _greedy_distinct_reference(model, images, labels):
    """Written from the definition on the full distance table: repeatedly take the nearest
    (prototype, own-class image, cell) among prototypes not yet placed and images not yet used."""
    with torch.no_grad():
        z = model.features(images)                                            # (N, C, H, W)
    n, c, h, w = z.shape
    cells = z.permute(0, 2, 3, 1).reshape(n, h * w, c)                        # (N, HW, C)
    protos = model.prototypes.detach()
    d = ((cells[None] - protos[:, None, None]) ** 2).sum(-1).double()       # (m, N, HW)
    own = labels[None, :] == model.prototype_class[:, None]                  # (m, N)
    d[~own] = float("inf")
    place = {}
    while len(place) < protos.shape[0]:
        j, i, k = np.unravel_index(int(d.argmin()), d.shape)
        place[int(j)] = (int(i), int(k))
        d[j] = float("inf")
        d[:, i] = float("inf")
    return place


def test_distinct_push_takes_one_image_per_prototype():
    torch.manual_seed(1)
    model = IAIABL(get_preset("tiny").model)
    images = torch.randn(30, 3, 64, 64)                                       # 10 images per class
    labels = torch.arange(3).repeat(10)
    free = nearest_patches(model, images, labels, batch_size=7)
    near = nearest_patches(model, images, labels, batch_size=7, distinct=True)
    assert len(set(near.image.tolist())) == model.num_prototypes              # 15 distinct images
    ref = _greedy_distinct_reference(model, images, labels)
    for j in range(model.num_prototypes):
        assert (int(near.image[j]), int(near.patch[j])) == ref[j]
    assert bool((near.sq_distance >= free.sq_distance * (1 - 1e-5)).all())    # never nearer than free
    with torch.no_grad():
        z = model.features(images).flatten(2)                                 # (N, C, HW)
    assert torch.allclose(near.vector, z[near.image, :, near.patch], atol=1e-6)
    # the free push puts several prototypes on one image here; the distinct one does not
    assert len(set(free.image.tolist())) < model.num_prototypes


def test_distinct_push_reuses_images_only_when_a_class_runs_out(toy):
    model, images, labels = toy                                               # 4 images, 5 prototypes a class
    near = nearest_patches(model, images, labels, distinct=True)
    for cls in range(3):
        picked = near.image[model.prototype_class == cls].tolist()
        assert len(set(picked)) == 4 and all(labels[i] == cls for i in picked)


def test_push_needs_every_class(toy):
    model, images, labels = toy
    keep = labels != 2
    with pytest.raises(ValueError, match="no image of class spiculated"):
        nearest_patches(model, images[keep], labels[keep])


def _records(sources):
    return [{"prototype": j, "source_index": s, "patch": [r, c]} for j, (s, r, c) in enumerate(sources)]


def test_prune_merges_duplicates_and_sums_h1_columns():
    torch.manual_seed(1)
    model = IAIABL(get_preset("tiny").model).eval()
    with torch.no_grad():
        model.prototypes[1] = model.prototypes[0]                            # same patch (class 0)
        model.prototypes[3] = model.prototypes[0]                            # same patch, 3 members
        model.prototypes[7] = model.prototypes[6] + 1e-4                     # within tolerance (class 1)
        model.prototypes[10] = model.prototypes[4]                           # equal but other class: kept
        model.margin_head.weight.normal_()
    sources = [(j, 0, 0) for j in range(15)]
    sources[1] = sources[3] = sources[0]
    w_before = model.margin_head.weight.detach().clone()
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        logits_before = model(x).margin_logits
    report = prune_duplicates(model, _records(sources), tolerance=1e-4)
    assert report["before"] == 15 and report["after"] == 12
    assert report["merged"] == [
        {"kept": 0, "removed": [1, 3], "class": "circumscribed", "reason": "distance + same patch"},
        {"kept": 6, "removed": [7], "class": "indistinct", "reason": "distance"},
    ]
    keep = report["kept"]
    assert keep == [0, 2, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14]
    c = get_preset("tiny").model.prototype_channels
    assert model.prototypes.shape == (12, c) and model.margin_head.weight.shape == (3, 12)
    assert model.prototype_class.tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2]
    w = model.margin_head.weight
    assert torch.allclose(w[:, 0], w_before[:, 0] + w_before[:, 1] + w_before[:, 3])
    assert torch.allclose(w[:, 4], w_before[:, 6] + w_before[:, 7])
    assert torch.allclose(w[:, 1], w_before[:, 2])
    with torch.no_grad():
        logits_after = model(x).margin_logits
    assert torch.allclose(logits_after, logits_before, atol=1e-2)            # 6 and 7 differ by 1e-3
    # push records follow the kept prototypes
    recs, arrays = select(_records(sources), {"a": np.arange(15)}, keep)
    assert [r["original_prototype"] for r in recs] == keep and list(arrays["a"]) == keep
    assert [r["prototype"] for r in recs] == list(range(12))


def test_prune_exact_duplicates_keep_logits_exactly():
    torch.manual_seed(2)
    model = IAIABL(get_preset("tiny").model).eval()
    with torch.no_grad():
        model.prototypes[13] = model.prototypes[12]
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        before = model(x).margin_logits
    report = prune_duplicates(model, None, tolerance=0.0 + 1e-12)
    assert report["after"] == 14
    with torch.no_grad():
        assert torch.allclose(model(x).margin_logits, before, atol=1e-5)


def test_nothing_to_prune():
    torch.manual_seed(3)
    model = IAIABL(get_preset("tiny").model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    report = prune_duplicates(model, _records([(j, 0, 0) for j in range(15)]), 1e-3)
    assert report["before"] == report["after"] == 15 and report["merged"] == []
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k])


def test_duplicate_groups_chain():
    p = torch.tensor([[0.0], [0.5], [1.0], [3.0]])
    groups = duplicate_groups(p, torch.tensor([0, 0, 0, 0]), None, tolerance=0.3)
    assert groups == [([0, 1, 2], "distance")]                               # 0~1, 1~2: one group


def test_resize_prototypes_for_loading():
    model = IAIABL(get_preset("tiny").model)
    resize_prototypes(model, [0, 1, 1, 2])
    assert model.prototypes.shape == (4, get_preset("tiny").model.prototype_channels)
    assert model.margin_head.weight.shape == (3, 4)
    assert "prototype_class" in dict(model.named_buffers())
    assert model.margin_head.weight[:, 0].tolist() == [1.0, -1.0, -1.0]

"""The pretrained tiny backbone: its targets, the shipped weights and their hash, and which tiny
models start from them (the black box and the "pretrained" ablation; IAIA-BL and ProtoPNet start
from scratch)."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from iaiabl_lib import pretrain
from iaiabl_lib.config import IMAGENET_MEAN, IMAGENET_STD, get_preset
from iaiabl_lib.errors import UserError
from iaiabl_lib.model import TinyBackbone, build_model, tiny_backbone


def _normalised(grey: torch.Tensor) -> torch.Tensor:
    """(B, 1, S, S) in [0, 1] -> ImageNet-normalised (B, 3, S, S), as data.dataset.normalise."""
    mean = torch.tensor(IMAGENET_MEAN)[None, :, None, None]
    std = torch.tensor(IMAGENET_STD)[None, :, None, None]
    return (grey.repeat(1, 3, 1, 1) - mean) / std


def test_structure_targets_find_the_orientation_of_an_edge():
    """A vertical edge has a horizontal gradient (θ = 0, bin 0 and its wrap-around neighbour 7);
    a horizontal edge θ = π/2 (bins 3 and 4); a flat image has no gradient at all."""
    size, grid = 32, 4
    vertical = torch.zeros(1, 1, size, size)
    vertical[..., :, size // 2:] = 1
    horizontal = vertical.transpose(-1, -2).clone()
    flat = torch.full((1, 1, size, size), 0.5)
    t = pretrain.structure_targets(_normalised(torch.cat([vertical, horizontal, flat])), grid)
    assert t.shape == (3, pretrain.ORIENTATION_BINS + 1, grid, grid)
    # the edge at x = 16 lies between cell columns 1 and 2 (cells of 8 px)
    hist_v = t[0, :pretrain.ORIENTATION_BINS][:, :, 1:3].sum(dim=(1, 2))
    hist_h = t[1, :pretrain.ORIENTATION_BINS][:, 1:3, :].sum(dim=(1, 2))
    assert float(hist_v[[0, 7]].sum() / hist_v.sum()) == pytest.approx(1.0, abs=1e-6)
    assert float(hist_h[[3, 4]].sum() / hist_h.sum()) == pytest.approx(1.0, abs=1e-6)
    # magnitude channel: log(1e-3) where nothing changes, larger on the edge
    assert torch.allclose(t[2, -1], torch.full((grid, grid), math.log(1e-3)), atol=1e-5)
    assert float(t[0, -1, 0, 1]) > float(t[0, -1, 0, 0])


def test_lesion_targets_are_area_fractions():
    masks = torch.zeros(1, 1, 16, 16)
    masks[..., :4, :8] = 1
    t = pretrain.lesion_targets(masks, 4)
    assert t.shape == (1, 1, 4, 4)
    assert t[0, 0, 0].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert float(t.sum()) == pytest.approx(2.0)


def test_shipped_weights_load_with_their_hash_and_the_ablation_uses_them():
    """The tiny prototype presets (IAIA-BL, ProtoPNet) start from scratch (config.py: on the tuning
    seeds that did better); the black box and the "pretrained" ablation start from the shipped
    weights, whose SHA-256 in TINY_WEIGHTS matches the file."""
    from iaiabl_lib import bookcache
    from iaiabl_lib.baselines import build_blackbox

    name, sha = pretrain.TINY_WEIGHTS["synthetic"]
    assert sha is not None and len(sha) == 64
    state = pretrain.load_tiny_weights("synthetic")
    for preset in ("tiny", "tiny-protopnet"):
        assert get_preset(preset).model.pretrained == "none"
    assert get_preset("tiny-blackbox").model.pretrained == "synthetic"
    ablation = get_preset("tiny").replace(bookcache.BOOK_OVERRIDES["pretrained"])
    for backbone in (build_model(ablation).backbone, build_blackbox("tiny").backbone):
        got = backbone.state_dict()
        assert all(torch.equal(got[k], state[k]) for k in state)
    for scratch in (tiny_backbone("none").state_dict(), build_model(get_preset("tiny")).backbone.state_dict(),
                    build_blackbox("tiny", pretrained="none").backbone.state_dict()):
        assert not any(torch.equal(scratch[k], state[k]) for k in state if state[k].numel() > 1)


def test_a_file_that_is_not_the_shipped_one_is_refused(monkeypatch, tmp_path):
    name, sha = pretrain.TINY_WEIGHTS["synthetic"]
    monkeypatch.setitem(pretrain.TINY_WEIGHTS, "synthetic", (name, "0" * 64))
    with pytest.raises(UserError, match="SHA-256"):
        pretrain.load_tiny_weights("synthetic")
    monkeypatch.setitem(pretrain.TINY_WEIGHTS, "gone", ("no_such_file.pt", "0" * 64))
    with pytest.raises(UserError, match="missing"):
        pretrain.load_tiny_weights("gone")
    with pytest.raises(UserError, match="iaiabl pretrain"):
        pretrain.load_tiny_weights(str(tmp_path / "nothing.pt"))
    # a file of one's own (iaiabl pretrain --out FILE) loads by path
    own = TinyBackbone()
    torch.save(own.state_dict(), tmp_path / "own.pt")
    p = dataclasses.replace(get_preset("tiny").model, pretrained=str(tmp_path / "own.pt"))
    loaded = tiny_backbone(p.pretrained).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in own.state_dict().items())


def test_pretraining_changes_no_global_random_state(tmp_path, monkeypatch):
    """pretrain() seeds locally: the caller's torch generator is where it was."""
    from iaiabl_lib.data.dataset import TensorSet

    n, s = 8, 64
    gen = torch.Generator().manual_seed(3)
    masks = torch.zeros(n, 1, s, s)
    masks[:, :, 20:40, 20:40] = 1
    fake = TensorSet(images=torch.randn(n, 3, s, s, generator=gen), lesion_masks=masks,
                     fine_masks=torch.zeros(n, 1, s, s), has_fine=torch.zeros(n, dtype=torch.bool),
                     labels=torch.zeros(n, dtype=torch.long), malignant=torch.zeros(n, dtype=torch.long))
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    monkeypatch.setattr(pretrain, "_load", lambda folder: fake)
    net, info = pretrain.pretrain({1000: tmp_path, 1003: tmp_path}, steps=2, batch_size=4, progress=False)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert info["steps"] == 2 and np.isfinite(info["final_losses"]["lesion_bce"])


def test_presets_refuse_weights_of_the_other_backbone_and_a_certain_dropout():
    from iaiabl_lib.config import resolve_preset

    with pytest.raises(ValueError, match="names the vgg16 backbone's weights"):
        resolve_preset("paper", {"model.backbone": "tiny"})
    # the tiny black box starts from the tiny weights; IAIA-BL's tiny preset only in the ablation
    with pytest.raises(ValueError, match="names the tiny backbone's weights"):
        resolve_preset("tiny-blackbox", {"model.backbone": "vgg16"})
    with pytest.raises(ValueError, match="names the tiny backbone's weights"):
        resolve_preset("tiny", {"model.backbone": "vgg16", "model.pretrained": "synthetic"})
    assert resolve_preset("tiny", {"model.backbone": "vgg16"}).model.pretrained == "none"
    with pytest.raises(ValueError, match="below 1"):
        resolve_preset("tiny", {"model.head_dropout": "1"})
    assert resolve_preset("tiny", {"model.pretrained": "none"}).model.pretrained == "none"

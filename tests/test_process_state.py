"""No library call changes process-wide state unless its name says so (issue 23): training and the
estimate give the caller's random generators and backend switches back; inference leaves the
caller's model on its device and in its mode."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from iaiabl_lib import fastpath
from iaiabl_lib.baselines import blackbox_predict, train_blackbox
from iaiabl_lib.baselines.blackbox import BlackBox
from iaiabl_lib.config import get_preset
from iaiabl_lib.model import IAIABL
from iaiabl_lib.predict import predict, similarities
from iaiabl_lib.train import estimate, train

TINY = {"train.warm_epochs": 1, "train.push_start": 1, "train.push_every": 1, "train.last_layer_epochs": 1}


def _process_state() -> tuple:
    """What a caller could observe: the global generators (torch CPU and CUDA, NumPy) and the
    backend switches."""
    cuda = tuple(s.clone() for s in torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else ()
    flags = tuple(getattr(fastpath._flag_owner(m), n) for m, n in fastpath.BACKEND_FLAGS)
    kind, keys, pos, gauss, cached = np.random.get_state()
    return torch.get_rng_state().clone(), cuda, (kind, keys.copy(), pos, gauss, cached), flags


def _assert_same(before: tuple, after: tuple) -> None:
    assert torch.equal(before[0], after[0]), "the global torch generator was changed"
    assert all(torch.equal(a, b) for a, b in zip(before[1], after[1])), "a CUDA generator was changed"
    assert before[2][0] == after[2][0] and np.array_equal(before[2][1], after[2][1]) \
        and before[2][2:] == after[2][2:], "NumPy's global generator was changed"
    assert before[3] == after[3], "backend switches were changed"


@pytest.fixture
def caller_state():
    """A caller with its own seeds and switches (the opposite of what a CUDA run sets)."""
    saved = [getattr(fastpath._flag_owner(m), n) for m, n in fastpath.BACKEND_FLAGS]
    for m, n in fastpath.BACKEND_FLAGS:
        setattr(fastpath._flag_owner(m), n, False)
    torch.manual_seed(1234)
    np.random.seed(1234)
    torch.rand(3)                      # somewhere in the middle of its stream
    np.random.rand(3)
    yield _process_state()
    for (m, n), value in zip(fastpath.BACKEND_FLAGS, saved):
        setattr(fastpath._flag_owner(m), n, value)


def test_restore_process_state_undoes_setup(caller_state):
    """``setup`` for a CUDA device seeds and switches for the process; inside
    ``restore_process_state`` it does so only for the block, even when the block fails."""
    with fastpath.restore_process_state():
        fastpath.setup(torch.device("cuda"), 0)          # sets the switches; no GPU needed
        assert all(getattr(fastpath._flag_owner(m), n) for m, n in fastpath.BACKEND_FLAGS)
        inside = torch.rand(1)
    _assert_same(caller_state, _process_state())
    with pytest.raises(ZeroDivisionError), fastpath.restore_process_state():
        fastpath.setup(torch.device("cuda"), 0)
        assert torch.equal(torch.rand(1), inside)        # the run sees exactly what setup gives it
        1 / 0
    _assert_same(caller_state, _process_state())


def test_train_estimate_and_blackbox_leave_the_callers_state(prepared, tmp_path, caller_state):
    train(prepared, "tiny", tmp_path / "run", epochs=1, seed=0, device="cpu", progress=False, overrides=TINY)
    _assert_same(caller_state, _process_state())
    estimate(prepared, "tiny", epochs=1, seed=0, device="cpu", overrides=TINY)
    _assert_same(caller_state, _process_state())
    train_blackbox(prepared, "tiny", tmp_path / "bb", epochs=1, seed=0, device="cpu", progress=False)
    _assert_same(caller_state, _process_state())


def _tiny_model() -> IAIABL:
    preset = get_preset("tiny").replace({"model.pretrained": "none"})
    return IAIABL(preset.model)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_inference_leaves_the_model_in_its_mode(mode):
    model = _tiny_model().train(mode == "train")
    images = torch.zeros(2, 3, model.cfg.image_size, model.cfg.image_size)
    predict(model, images, batch_size=1)
    assert model.training == (mode == "train")
    similarities(model, images)
    assert model.training == (mode == "train")
    bb = BlackBox(model.cfg).train(mode == "train")
    blackbox_predict(bb, images, cams=True)
    assert bb.training == (mode == "train")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device (CUDA)")
def test_inference_on_another_device_leaves_the_model_where_it_was(tiny_blackbox):
    model = _tiny_model().train()
    images = torch.zeros(2, 3, model.cfg.image_size, model.cfg.image_size)
    on_cpu = predict(model, images, device="cpu")
    on_gpu = predict(model, images, device="cuda")
    assert model.prototypes.device.type == "cpu" and model.training
    np.testing.assert_allclose(on_cpu["margin_prob"], on_gpu["margin_prob"], atol=1e-4)
    from iaiabl_lib.baselines import load_blackbox
    bb = load_blackbox(tiny_blackbox, device="cpu").model.train()
    blackbox_predict(bb, images, device="cuda", cams=False)
    assert next(bb.parameters()).device.type == "cpu" and bb.training

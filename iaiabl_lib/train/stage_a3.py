"""Stage A3 (Barnett et al. 2021 §2.3, Eq. 8): after each push, train the margin head h1 alone with

    CE + λ1·L1(off-class weights of h1)        (λ1 = 1e-4; ``losses.l1_off_class``)

on the similarities of the training images. The network below h1 is frozen, so the similarities
are exact and computed once (cached), which makes the stage cheap. ``model.reset_margin_head``
restores h1's initialisation (+1 own class, −1 (IAIA-BL) or −0.5 (ProtoPNet) otherwise).
"""
from __future__ import annotations

from typing import Callable

import torch

from ..config import Preset
from ..data.dataset import balanced_order
from ..losses import cross_entropy, l1_off_class
from ..model import IAIABL
from ..predict import average_margin_auroc, similarities
from .stage_a1 import make_optimizer, set_stage

__all__ = ["train_last_layer"]


def train_last_layer(model: IAIABL, preset: Preset, train_set, val_set=None, generator: torch.Generator | None = None,
                     epochs: int | None = None, on_epoch: Callable[[dict], None] | None = None,
                     bar: Callable = lambda it, **kw: it, desc: str = "last layer",
                     epoch_size: int | None = None) -> float:
    """Stage A3: h1 alone, CE + λ1·L1(off-class h1), Adam at ``train.lr_last_layer`` for
    ``train.last_layer_epochs`` epochs of minibatches, on CACHED similarities of the un-augmented
    training set: the backbone, add-on and prototypes are frozen, so s_j is exact and computed once.

    train_set / val_set: TensorSets (images, labels); on_epoch receives each epoch's
    {ce, l1, loss, train_auroc, val_auroc, lr}. ``epoch_size``: similarities per epoch, drawn
    class-balanced (``data.dataset.balanced_order``; the paper preset: 15 000, as the authors' code
    iterates its augmented training set); default one pass over the training split in random order.
    Returns the final validation average margin AUROC (NaN without val_set).
    """
    t = preset.train
    epochs = t.last_layer_epochs if epochs is None else epochs
    dev = model.prototypes.device
    s_train = similarities(model, train_set.images, t.eval_batch_size)          # (N, m)
    s_val = similarities(model, val_set.images, t.eval_batch_size) if val_set is not None else None
    y = train_set.labels.to(dev)

    def val_auc() -> float:
        if s_val is None:
            return float("nan")
        with torch.no_grad():
            return average_margin_auroc(val_set.labels.cpu().numpy(), model.margin_head(s_val).cpu().numpy())

    set_stage(model, "last_layer")
    opt = make_optimizer(model, preset, "last_layer")
    w = model.margin_head.weight
    n = s_train.shape[0]
    auc = val_auc()
    gdev = generator.device if generator is not None else "cpu"
    for _ in bar(range(epochs), desc=desc):
        if epoch_size:
            perm = balanced_order(train_set.labels, epoch_size, generator).to(dev)
        else:
            perm = torch.randperm(n, generator=generator, device=gdev).to(dev)
        sums = torch.zeros(3, device=dev)
        steps = 0
        for i in range(0, len(perm), t.batch_size):
            b = perm[i:i + t.batch_size]
            ce = cross_entropy(model.margin_head(s_train[b]), y[b])
            l1 = l1_off_class(w, model.prototype_class)
            loss = preset.loss.ce * ce + preset.loss.l1 * l1
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums += torch.stack([ce, l1, loss]).detach()
            steps += 1
        ce_, l1_, loss_ = (sums / max(steps, 1)).tolist()
        with torch.no_grad():
            train_auc = average_margin_auroc(y.cpu().numpy(), model.margin_head(s_train).cpu().numpy())
        auc = val_auc()
        if on_epoch is not None:
            on_epoch({"ce": ce_, "l1": l1_, "loss": loss_, "train_auroc": train_auc, "val_auroc": auc,
                      "lr": opt.param_groups[0]["lr"]})
    set_stage(model, "frozen")
    return auc

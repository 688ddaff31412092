"""Stage A1 (Barnett et al. 2021 §2.3, Eq. 3): train the backbone f, the add-on layers and the prototypes
with h1 fixed, minimising (the paper's Eq. 3)

    CE + λc·Clst − λs·Sep + λf·Fine        (Eq. 3-7, ``losses``)

on batches of 75 lesion-scale images and 10 fine-annotated ones (the paper's sizes). The first
``warm_epochs`` train the add-on layers and prototypes only (warm-up, backbone frozen); the rest
train all three ("joint").

    make_batch(a1_set, idx, n_lesion, preset)   a batch: images, labels, relevant masks
    make_step(model, preset, optimizer)         the step: forward, Eq. 3, backward, update
    make_optimizer(model, preset, stage)        Adam with the preset's learning rates
    set_stage(model, stage)                     which parts train (``STAGE_TRAINABLE``)

Fast path (GPU): bf16 autocast (fp16 + GradScaler where bf16 is missing), channels_last, fused
Adam, optional torch.compile, and no host synchronisation inside the step (the loss terms stay on
the device). ``make_step(..., reference=True)`` runs the same code in plain fp32, for benchmarks.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import Tensor

from .. import fastpath
from ..config import Preset
from ..losses import cluster_separation, cross_entropy, fine_annotation_loss, lesion_pull
from ..model import IAIABL, IAIABLOutput

__all__ = ["STAGE_TRAINABLE", "set_stage", "make_optimizer", "Batch", "make_batch", "a1_objective",
           "init_prototypes_on_lesion_patches",
           "push_to_pull", "make_step", "train_step"]


STAGE_TRAINABLE = {
    "warm": ("add_on", "prototypes"),
    "joint": ("backbone", "add_on", "prototypes"),
    "last_layer": ("margin_head",),
    "frozen": (),
}
"""Which parts of the network each stage trains (h2 is fitted by scikit-learn in stage B)."""


def set_stage(model: IAIABL, stage: str) -> None:
    """requires_grad on exactly the parts ``STAGE_TRAINABLE[stage]``."""
    trainable = STAGE_TRAINABLE[stage]
    for name, p in model.named_parameters():
        p.requires_grad_(name.split(".")[0] in trainable)


def make_optimizer(model: IAIABL, preset: Preset, stage: str, reference: bool = False) -> torch.optim.Optimizer:
    """Adam for ``stage`` (warm, joint, last_layer) with the preset's learning rates; weight decay
    on the convolution weights (not biases, not prototypes). Fused on CUDA unless ``reference``."""
    t = preset.train

    def conv(module, lr):
        weights = [p for p in module.parameters() if p.ndim > 1]
        biases = [p for p in module.parameters() if p.ndim <= 1]
        return [{"params": weights, "lr": lr, "weight_decay": t.weight_decay},
                {"params": biases, "lr": lr, "weight_decay": 0.0}]

    if stage == "warm":
        groups = conv(model.add_on, t.lr_warm_add_on) + [
            {"params": [model.prototypes], "lr": t.lr_warm_prototypes, "weight_decay": 0.0}]
    elif stage == "joint":
        groups = conv(model.backbone, t.lr_joint_backbone) + conv(model.add_on, t.lr_joint_add_on) + [
            {"params": [model.prototypes], "lr": t.lr_joint_prototypes, "weight_decay": 0.0}]
    elif stage == "last_layer":
        groups = [{"params": [model.margin_head.weight], "lr": t.lr_last_layer, "weight_decay": 0.0}]
    else:
        raise ValueError(f"no optimiser for stage {stage!r}")
    groups = [g for g in groups if g["params"]]
    fused = (not reference) and model.prototypes.is_cuda
    return torch.optim.Adam(groups, fused=True) if fused else torch.optim.Adam(groups)


class Batch(NamedTuple):
    """One A1 batch: the lesion-scale batch followed by the fine-annotation batch."""

    images: Tensor                  # (B, 3, S, S) ImageNet-normalised (augmented)
    labels: Tensor                  # (B,) margin index
    relevant_mask: Tensor | None    # (B − mask_start, 1, S, S) 1 = relevant, for rows mask_start:
    mask_start: int = 0             # first row that carries a mask (the fine batch when lesion masks are off)
    lesion_masks: Tensor | None = None  # (B, 1, S, S) every row's lesion mask (loss.remember only)


def make_batch(a1_set, idx: Tensor, n_lesion: int, preset: Preset,
               generator: torch.Generator | None = None) -> Batch:
    """The A1 batch of rows ``idx`` of ``a1_set`` (a TensorSet on the device): the first
    ``n_lesion`` rows are the lesion-scale batch, the rest the fine-annotation batch.

    ``train.context_swap`` (not the paper): after the augmentation, with that probability per row,
    the pixels around the mass come from another case (``data.dataset.swap_context``).

    Masks: lesion masks on the lesion-scale rows (``train.use_lesion_masks``), fine masks on the
    fine rows (``train.use_fine_loss``); none when the fine-annotation loss is off (λf = 0). With
    ``train.augment`` the images and their masks go through the same random transform
    (``data.dataset.augment_batch`` with the recipe ``train.augmentation``). Without lesion masks,
    the mask rows start at the fine batch (``Batch.mask_start``).
    """
    from ..data.dataset import AUGMENTATIONS, augment_batch, swap_context

    t = preset.train
    images, labels = a1_set.images[idx], a1_set.labels[idx]              # (B, 3, S, S), (B,)
    need_mask = (t.use_lesion_masks or t.use_fine_loss) and preset.loss.fine != 0
    masks = None
    if need_mask:   # lesion masks on the lesion-scale rows, fine masks on the fine rows
        masks = torch.cat([a1_set.lesion_masks[idx[:n_lesion]], a1_set.fine_masks[idx[n_lesion:]]])
    # every row's lesion mask, for loss.remember and train.context_swap (the same transform as the
    # image); both, like Eq. 7 on the lesion-scale rows, need train.use_lesion_masks
    swap = t.context_swap > 0 and t.use_lesion_masks
    lesion = a1_set.lesion_masks[idx] if (preset.loss.remember and t.use_lesion_masks) or swap else None
    if t.augment:       # one random draw per row whatever masks come along (augment_batch)
        listed = [m for m in (masks, lesion) if m is not None]
        images, listed = augment_batch(images, listed, generator, **AUGMENTATIONS[t.augmentation])
        masks = listed.pop(0) if masks is not None else None
        lesion = listed.pop(0) if lesion is not None else None
    if swap:            # not the paper: the context around each mass from another case
        images = swap_context(images, lesion, generator, p=t.context_swap, dilation=t.context_dilation)
    lesion = lesion if preset.loss.remember else None
    start = 0 if t.use_lesion_masks else n_lesion
    return Batch(images, labels, masks[start:] if masks is not None else None, start, lesion)


def a1_objective(out: IAIABLOutput, batch: Batch, prototype_class: Tensor, preset: Preset) -> dict[str, Tensor]:
    """Stage-A1 objective (the paper's Eq. 3): CE + λc·Clst − λs·Sep + λf·Fine; nothing on h1 (it is fixed).

    Fine (Eq. 7) is evaluated on the rows that carry a mask: lesion masks on the lesion-scale batch
    (``train.use_lesion_masks``), fine masks on the fine batch (``train.use_fine_loss``).
    """
    w = preset.loss
    ce = cross_entropy(out.margin_logits, batch.labels)
    clst, sep = cluster_separation(out.min_k_dist, batch.labels, prototype_class)
    mask = batch.relevant_mask
    if mask is not None and mask.shape[0] > 0 and w.fine != 0:
        s = batch.mask_start
        fine = fine_annotation_loss(out.similarity_maps[s:], batch.labels[s:], prototype_class, mask,
                                    norm=w.fine_norm)
    else:
        fine = ce.new_zeros(())
    loss = w.ce * ce + w.clst * clst - w.sep * sep + w.fine * fine
    terms = {"ce": ce, "clst": clst, "sep": sep, "fine": fine}
    if w.remember and batch.lesion_masks is not None:      # not the paper: losses.lesion_pull
        from ..push import patch_mask_from

        cells = patch_mask_from(batch.lesion_masks, tuple(out.sq_dist.shape[-2:]))      # (B, H, W)
        terms["remember"] = lesion_pull(out.sq_dist, batch.labels, prototype_class, cells)
        loss = loss + w.remember * terms["remember"]
    return {**terms, "loss": loss}


def push_to_pull(model: IAIABL, batch: Batch, preset: Preset) -> Tensor:
    """For each prototype, how hard Eq. 7 pushes it against how hard the cross entropy pulls it on
    ``batch``: ‖∂(λf·Fine)/∂p_j‖ / ‖∂CE/∂p_j‖, with the preset's ``loss.fine_norm``. A ratio that
    stays large on a prototype far from every patch is a push that never fades (chapter 7, "Which
    norm"). The model's parameters and gradients are left as they were. -> (m,)"""
    was = model.prototypes.requires_grad
    model.prototypes.requires_grad_(True)
    try:
        out = model(batch.images)
        terms = a1_objective(out, batch, model.prototype_class, preset)
        fine = preset.loss.fine * terms["fine"]
        fine_grad = (torch.autograd.grad(fine, model.prototypes, retain_graph=True)[0] if fine.requires_grad
                     else torch.zeros_like(model.prototypes))             # λf = 0 or no masked row: no push
        ce_grad, = torch.autograd.grad(preset.loss.ce * terms["ce"], model.prototypes)
    finally:
        model.prototypes.requires_grad_(was)
    return (fine_grad.norm(dim=1) / ce_grad.norm(dim=1).clamp_min(1e-30)).detach()   # (m,)


def make_step(model: IAIABL, preset: Preset, optimizer: torch.optim.Optimizer, reference: bool = False,
              forward: Callable | None = None, amp: bool | None = None,
              init_scale: float = 2.0 ** 16) -> Callable[[Batch], dict[str, Tensor]]:
    """A stage-A1 training step ``step(batch) -> {ce, clst, sep, fine, loss, margin_logits}``
    (detached tensors on the device; nothing is synchronised with the host).

    Fast path (``reference=False``): autocast in ``fastpath.autocast_dtype`` (bf16; fp16 + a
    GradScaler on GPUs without native bf16) when ``amp`` is on, by default ``train.amp`` on CUDA
    only (``amp=True`` switches it on for a CPU too, for tests); channels_last when
    ``train.channels_last`` (the model is converted here). ``reference=True``: fp32, contiguous,
    whatever the preset says: the same code, for benchmarks. ``forward``: a compiled ``model``
    (torch.compile) to call instead of ``model``. The loss terms are computed in fp32 from the
    autocast network outputs (``a1_objective`` runs outside the autocast region). ``init_scale``:
    the fp16 GradScaler's first loss scale (PyTorch's default 2¹⁶; a step whose scaled gradients
    overflow is skipped and the scale halved, as loss scaling does).
    """
    dev = model.prototypes.device
    t = preset.train
    if amp is None:
        amp = t.amp and dev.type == "cuda"
    use_amp = (not reference) and amp
    dtype = fastpath.autocast_dtype(dev, t.amp_dtype) if use_amp else torch.float32
    channels_last = (not reference) and t.channels_last
    model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    scaler = (torch.amp.GradScaler(dev.type, init_scale=init_scale)
              if use_amp and fastpath.needs_scaler(dtype) else None)
    fwd = forward if forward is not None else model

    def step(batch: Batch) -> dict[str, Tensor]:
        images = batch.images
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=dev.type, dtype=dtype, enabled=use_amp):
            out = fwd(images)
        terms = a1_objective(out, batch, model.prototype_class, preset)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(terms["loss"]).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            terms["loss"].backward()
            optimizer.step()
        result = {k: v.detach() for k, v in terms.items()}
        result["margin_logits"] = out.margin_logits.detach()
        return result

    step.scaler = scaler  # type: ignore[attr-defined]
    return step


def train_step(model: IAIABL, preset: Preset, optimizer: torch.optim.Optimizer, batch: Batch,
               reference: bool = False) -> dict[str, Tensor]:
    """One A1 step on ``batch`` (``make_step`` built and called once; for benchmarks and tests)."""
    return make_step(model, preset, optimizer, reference=reference)(batch)


@torch.no_grad()


def init_prototypes_on_lesion_patches(model, train_set, batch_size: int, seed: int) -> None:
    """``model.prototype_init = "lesion_patches"``: each prototype starts as the latent patch
    (of the untrained network) of a random cell inside the lesion of a random training image of
    its class, all distinct, instead of a uniform random vector (the paper's ``torch.rand``)."""
    from ..push import patch_mask_from

    g = torch.Generator().manual_seed(seed)
    was = model.training
    model.eval()
    z = torch.cat([model.features(train_set.images[i:i + batch_size])
                   for i in range(0, len(train_set), batch_size)]).float()   # (N, C, H, W)
    model.train(was)
    n, c, h, w = z.shape
    allowed = patch_mask_from(train_set.lesion_masks, (h, w)).to(z.device)              # (N, H, W)
    labels = train_set.labels.to(z.device)
    for cls in range(model.cfg.num_classes):
        cells = torch.nonzero(allowed & (labels == cls)[:, None, None])                # (K, 3)
        slots = torch.nonzero(model.prototype_class == cls).flatten()
        pick = cells[torch.randperm(len(cells), generator=g)[:len(slots)].to(cells.device)]
        model.prototypes.data[slots] = z[pick[:, 0], :, pick[:, 1], pick[:, 2]].to(model.prototypes.dtype)

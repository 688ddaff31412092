"""Grad-CAM (Selvaraju et al. 2017) and Grad-CAM++ (Chattopadhay et al. 2018) of a black box, batched;
and its predictions with both maps."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..model import minmax_01
from ..predict import as_images, evaluating, malignancy_probability, margin_probabilities

from .blackbox import BlackBox

if TYPE_CHECKING:                       # training imports this module's neighbours, not this one
    from .training import BlackBoxRun

__all__ = ["gradcam", "gradcam_both", "blackbox_predict"]


def _targets(target_class, logits: Tensor) -> Tensor:
    """(B,) int64 target indices: None -> the predicted class (index 0 for a one-logit model)."""
    b, n = logits.shape
    if target_class is None:
        return logits.argmax(dim=1) if n > 1 else torch.zeros(b, dtype=torch.long, device=logits.device)
    t = torch.as_tensor(target_class, dtype=torch.long, device=logits.device)
    if t.ndim == 0:
        t = t.expand(b)
    if t.shape != (b,):
        raise ValueError(f"target_class: expected an int or {b} ints, got shape {tuple(t.shape)}")
    if bool(((t < 0) | (t >= n)).any()):
        raise ValueError(f"target_class out of range: the model has {n} output(s)")
    return t


def gradcam_both(model: BlackBox, images: Tensor, target_class=None,
                 size: int | tuple[int, int] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """GradCAM and GradCAM++ from one forward/backward pass.

    The backbone runs without a graph; only the head is differentiated (the gradients of the
    target logit with respect to the last conv feature map A, which is all both methods need).

        GradCAM:    α_c = mean_{ij} ∂y/∂A_{c,ij}
        GradCAM++:  α_c = Σ_{ij} relu(g_{c,ij}) · g² / (2 g² + Σ_{ij}A_{c,ij} · g³)   (g = ∂y/∂A)
        map = relu(Σ_c α_c A_c), bilinearly upsampled to the image, min-max normalised to [0, 1]

    images (B, 3, S, S) normalised; target_class: None (predicted class), an int, or (B,) ints.
    Returns ``(gradcam (B, S, S), gradcampp (B, S, S), logits (B, n))``, detached.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            feats = model.backbone(images).float()
        feats = feats.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model.classify(feats).float()                           # (B, n)
            t = _targets(target_class, logits)
            score = logits.gather(1, t[:, None]).sum()
            (grads,) = torch.autograd.grad(score, feats)                     # (B, C, H, W)
    finally:
        model.train(was_training)
    a, g = feats.detach(), grads.detach()
    w_cam = g.mean(dim=(2, 3))                                               # (B, C)
    g2 = g * g
    g3 = g2 * g
    sum_a = a.sum(dim=(2, 3), keepdim=True)
    alpha = g2 / (2 * g2 + sum_a * g3 + 1e-6)
    alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
    w_pp = (g.clamp_min(0) * alpha).sum(dim=(2, 3))                          # (B, C)
    size = size or tuple(images.shape[-2:])
    if isinstance(size, int):
        size = (size, size)
    out = []
    for w in (w_cam, w_pp):
        cam = (w[:, :, None, None] * a).sum(dim=1).clamp_min(0)             # (B, H, W)
        # normalise, upsample, normalise again: pytorch_grad_cam's order (the two agree up to
        # the 1e-7 guard of the division, which matters for maps with a tiny maximum)
        cam = minmax_01(cam)
        cam = F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        out.append(minmax_01(cam))
    return out[0], out[1], logits.detach()


def gradcam(model: BlackBox, images: Tensor, target_class=None, plus_plus: bool = False) -> Tensor:
    """GradCAM (or GradCAM++ with ``plus_plus``) of ``model`` for ``target_class`` (None: the
    predicted class; the malignancy model has one logit, class 0): (B, 3, S, S) -> (B, S, S) in
    [0, 1], upsampled to the image size. See :func:`gradcam_both`."""
    cam, campp, _ = gradcam_both(model, images, target_class)
    return campp if plus_plus else cam


def blackbox_predict(model: "BlackBox | BlackBoxRun", data, batch_size: int = 64, device=None,
                     cams: bool = True, target_class=None) -> dict[str, np.ndarray]:
    """Predictions of a black box on a TensorSet (or images (N, 3, S, S) normalised, or grey
    crops (N, S, S)).

    Returns numpy arrays: ``logits`` (N, n); ``margin_prob`` (N, 3) for the margin task or
    ``malignancy_prob`` (N,) for the malignancy task; with ``cams``: ``gradcam`` and ``gradcampp``
    (N, S, S) for ``target_class`` (default: the predicted margin class / the malignant logit).
    """
    model = getattr(model, "model", model)          # a BlackBoxRun or the network
    images = as_images(data)
    with evaluating(model, device) as device:       # the caller's model keeps its device and mode
        return _blackbox_outputs(model, images, batch_size, device, cams, target_class)


def _blackbox_outputs(model, images: Tensor, batch_size: int, device: torch.device, cams: bool,
                      target_class) -> dict[str, np.ndarray]:
    """The body of :func:`blackbox_predict`: ``model`` in eval mode on ``device``."""
    size = int(model.cfg.image_size)
    logits, cam, campp = [], [], []
    for s in range(0, images.shape[0], batch_size):
        x = images[s:s + batch_size].to(device).float()
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        if cams:
            tc = target_class
            if tc is not None and np.ndim(tc) > 0:
                tc = torch.as_tensor(np.asarray(tc)[s:s + batch_size])
            c, cp, lg = gradcam_both(model, x, tc)
            cam.append(c.cpu())
            campp.append(cp.cpu())
        else:
            with torch.no_grad():
                lg = model(x).float()
        logits.append(lg.cpu())
    lg = torch.cat(logits) if logits else torch.zeros(0, model.num_outputs)
    out = {"logits": lg.numpy()}
    if model.task == "margin":
        out["margin_prob"] = margin_probabilities(lg)
    else:
        out["malignancy_prob"] = malignancy_probability(lg[:, 0], fitted=True)   # trained end to end
    if cams:
        empty = torch.zeros(0, size, size)
        out["gradcam"] = (torch.cat(cam) if cam else empty).numpy()
        out["gradcampp"] = (torch.cat(campp) if campp else empty).numpy()
    return out

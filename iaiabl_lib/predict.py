"""Inference: a trained IAIA-BL network applied to images, in eval mode and fp32.

    similarities(model, images)   s_j of Eq. 2 for every image            (N, m)
    predict(model, images)        margin logits and probabilities (h1), the malignancy probability
                                  (h2, Eq. 10), similarities and similarity maps (Eq. 1)
    average_margin_auroc(...)     the unweighted mean one-vs-rest AUROC used to select models on
                                  the validation split (as the authors' code selects them)
    margin_probabilities(z)       THE rule from scores to probabilities, for every caller (predict,
    malignancy_probability(z, f)  explain, the explorers' dismissals, the black box): softmax of the
                                  margin logits; σ of h2's logit, or None when h2 is not fitted
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from .config import MARGINS
from .fastpath import pick_device
from .model import IAIABL

__all__ = ["as_images", "evaluating", "eval_batches", "similarities", "predict", "average_margin_auroc", "margin_probabilities", "malignancy_probability"]


def margin_probabilities(margin_logits) -> np.ndarray:
    """Softmax over the last axis of margin logits (h1's class scores, paper Fig. 2): (..., 3) ->
    (..., 3) numpy, in the logits' float precision. The one place this is computed."""
    z = margin_logits if isinstance(margin_logits, Tensor) else torch.as_tensor(np.asarray(margin_logits))
    z = z.detach().cpu()
    return torch.softmax(z if z.is_floating_point() else z.float(), dim=-1).numpy()


def malignancy_probability(malignancy_logit, fitted: bool):
    """P(malignant) = σ(h2's logit) (Eq. 10): (...) -> numpy of the same shape (a float for a
    single case), or None when the malignancy head is not fitted (stage B has not run). An
    unfitted head outputs σ(0) = 0.5, which would read as a prediction; None says there is none."""
    if not fitted:
        return None
    z = malignancy_logit if isinstance(malignancy_logit, Tensor) else torch.as_tensor(np.asarray(malignancy_logit))
    z = z.detach().cpu()
    p = torch.sigmoid(z if z.is_floating_point() else z.float()).numpy()
    return float(p) if p.ndim == 0 else p


def as_images(x, size: int | None = None) -> Tensor:
    """Anything the library's inference takes, as normalised float images (N, 3, S, S): a TensorSet
    (its ``images``), a tensor or array (N, 3, S, S) already normalised, or grey crops (N, S, S) /
    one (S, S) (uint8, or float in [0, 1]; normalised here as ``dataset.normalise`` does).
    ``size``: resize (bilinear) when the side differs. The one place inputs are coerced."""
    from .data.dataset import normalise

    images = getattr(x, "images", x)
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, Tensor):
        raise TypeError(f"expected a TensorSet, images (N, 3, S, S) or grey crops (N, S, S), got {type(x).__name__}")
    if images.ndim == 2:
        images = images[None]
    if images.ndim == 3:                       # grey crops (N, S, S), uint8 or [0, 1]
        images = normalise(images[:, None])
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, S, S) or grey crops (B, S, S), got {tuple(images.shape)}")
    images = images.float()
    if size is not None and images.shape[-1] != size:
        images = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return images


@contextmanager
def evaluating(model: nn.Module, device=None) -> Iterator[torch.device]:
    """``model`` in eval mode on ``device`` (default: where it is) for the ``with`` block, which
    gets the device; afterwards, even after an exception, the model is back in its own mode
    (train or eval) on its own device. The caller's model is never left changed."""
    home = next(model.parameters()).device
    dev = home if device is None else pick_device(device)
    was = model.training
    model.to(dev).eval()
    try:
        yield dev
    finally:
        model.to(home).train(was)


@torch.no_grad()          # on a generator, torch sets the mode around each step only: the caller's stays its own
def eval_batches(model: IAIABL, images: Tensor, batch_size: int = 256, device=None) -> Iterator[tuple[int, Any]]:
    """The model's forward pass over ``images`` (N, 3, S, S) in batches, in eval mode, fp32 and
    without gradients: yields (index of the batch's first image, the model's output for it), with
    the model on ``device`` (default: where it is) and back in its own mode and place afterwards
    (:func:`evaluating`). The one batched inference loop: ``predict``, ``similarities`` and the
    explanations (``explain.cam``, ``gallery``, ``health``) all run through it."""
    with evaluating(model, device) as dev:
        for start in range(0, images.shape[0], batch_size):
            yield start, model(images[start:start + batch_size].to(dev).float())


def similarities(model: IAIABL, images: Tensor, batch_size: int = 256) -> Tensor:
    """s_j (Eq. 2) of every image, in eval mode and fp32: (N, 3, S, S) -> (N, m) on the model's device."""
    parts = [out.similarity for _, out in eval_batches(model, images, batch_size)]
    dev = next(model.parameters()).device
    return torch.cat(parts) if parts else torch.zeros(0, model.num_prototypes, device=dev)


@torch.no_grad()
def predict(model: IAIABL, images_or_tensorset, batch_size: int = 256, device=None) -> dict[str, np.ndarray]:
    """Run the model (eval mode, fp32) on images (N, 3, S, S) ImageNet-normalised, or a TensorSet.

    Returns numpy arrays: margin_logits (N, 3), margin_prob (N, 3), malignancy_prob (N,) (None
    when the model's malignancy head is not fitted: ``model.malignancy_fitted``), similarity
    (N, m), similarity_maps (N, m, H, W). ``device``: where to run (default: the model's device);
    the model is back on its own device and in its own mode afterwards (:func:`evaluating`).
    """
    images = as_images(images_or_tensorset)
    keys = ("margin_logits", "malignancy_logit", "similarity", "similarity_maps")
    parts: dict[str, list] = {k: [] for k in keys}
    for _, out in eval_batches(model, images, batch_size, device):
        for k in keys:
            parts[k].append(getattr(out, k).float().cpu())
    res = {k: torch.cat(v).numpy() if v else np.zeros((0,)) for k, v in parts.items()}
    logits = res["margin_logits"]
    res["margin_prob"] = margin_probabilities(logits) if len(logits) else np.zeros((0, 3))
    res["malignancy_prob"] = malignancy_probability(res.pop("malignancy_logit"), model.malignancy_fitted)
    return res


def average_margin_auroc(labels: np.ndarray, margin_logits: np.ndarray) -> float:
    """Average over the 3 margin classes of the one-vs-rest AUROC of the margin probabilities
    (softmax of the margin logits); NaN when a class is missing from ``labels``."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    if len(np.unique(labels)) < len(MARGINS):
        return float("nan")
    prob = margin_probabilities(np.asarray(margin_logits, dtype=np.float64))
    return float(np.mean([roc_auc_score(labels == c, prob[:, c]) for c in range(len(MARGINS))]))

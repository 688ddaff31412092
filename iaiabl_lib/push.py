"""Stage A2, prototype projection ("push"), Barnett et al. 2021 §2.3 (after ProtoPNet, Chen et al.
2019).

Each prototype p_j is replaced by the latent patch nearest to it among the un-augmented training
images of ITS class:

    p_j  ←  argmin_{ z = f(x_i)_l : y_i = class(p_j) }  ‖z − p_j‖²

so that every prototype *is* a patch of a real training case, which can be shown to a radiologist
("this looks like that"). The search is one batched arg-min over the whole training set: images go
through the network in chunks, and each chunk contributes a (chunk · H · W)-wide matrix of squared
distances (a matrix product, ``model.squared_distances``) whose column minimum is merged with the
running best. There is no Python loop over images.

For every prototype the push records where it came from:

    source index / id   the training case (index into the prepared dataset, its manifest id)
    patch (row, col)    the latent-grid cell
    rf_box              the receptive field of that cell in the image (analytic, from the kernel
                        sizes, strides and paddings of the backbone; clipped to the image)
    high_activation_box the bounding box of the prototype's self-activation map (its PAM on its own
                        source image, upsampled to image size) at or above its 95th percentile
    sq_distance         ‖p_j − z‖² before the projection: how far the prototype moved
    self_activation     (S, S) that PAM; source_image (S, S) uint8 the grey ROI

Boxes are ``[y0, x0, y1, x1]`` in image pixels, end-exclusive (``image[y0:y1, x0:x1]``).
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .config import IMAGENET_MEAN, IMAGENET_STD, MARGINS
from .errors import InputError
from .model import IAIABL, activation_map, squared_distances

__all__ = ["HIGH_ACTIVATION_PERCENTILE", "ReceptiveField", "receptive_field", "rf_box",
           "high_activation_box", "NearestPatches", "patch_mask_from", "nearest_patches", "push_cells",
           "push_diagnostics", "grey_uint8", "PushResult", "push_prototypes", "select"]

HIGH_ACTIVATION_PERCENTILE = 95.0
"""The self-activation box holds the pixels at or above this percentile of the PAM (the paper's projection step, §2.3)."""


# ---------------------------------------------------------------------------------------------
# Receptive fields
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceptiveField:
    """Receptive field of a latent-grid cell along one axis (the backbones are square).

    Cell ``i`` is centred on pixel ``start + i * jump`` and covers ``size`` pixels."""

    jump: float    # distance in pixels between neighbouring cells (the total stride)
    size: float    # side of the receptive field in pixels
    start: float   # centre (pixel coordinate, pixel 0 centred at 0) of cell 0


def _pair(v) -> int:
    return int(v[0] if isinstance(v, (tuple, list)) else v)


def receptive_field(network: nn.Module) -> ReceptiveField:
    """Compose the receptive field through the convolutions and poolings of ``network`` (in module
    order; the backbone and the 1×1 add-on convolutions are plain sequences of layers).

    Per layer with kernel k, stride s, padding p, dilation d (standard recursion):
        size  += (k_eff − 1) · jump,   start += ((k_eff − 1)/2 − p) · jump,   jump *= s
    with k_eff = d (k − 1) + 1.
    """
    jump, size, start = 1.0, 1.0, 0.0
    for layer in network.modules():
        if isinstance(layer, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            k, s, p = _pair(layer.kernel_size), _pair(layer.stride), _pair(layer.padding)
            d = _pair(getattr(layer, "dilation", 1))
            k_eff = d * (k - 1) + 1
            size += (k_eff - 1) * jump
            start += ((k_eff - 1) / 2 - p) * jump
            jump *= s
    return ReceptiveField(jump=jump, size=size, start=start)


def rf_box(rf: ReceptiveField, row: int, col: int, image_size: int) -> list[int]:
    """``[y0, x0, y1, x1]`` (end-exclusive, clipped to the image) of latent cell (row, col)."""

    def span(i: int) -> tuple[int, int]:
        centre = rf.start + i * rf.jump
        lo = int(np.floor(centre - (rf.size - 1) / 2 + 1e-6))
        hi = int(np.floor(centre + (rf.size - 1) / 2 + 1e-6)) + 1
        return max(0, lo), min(image_size, hi)

    (y0, y1), (x0, x1) = span(row), span(col)
    return [y0, x0, y1, x1]


def high_activation_box(pam: Tensor, percentile: float = HIGH_ACTIVATION_PERCENTILE) -> Tensor:
    """The box shown around where a map is strongest: the bounding box of the connected region
    (8-neighbourhood) of pixels at or above the map's ``percentile``-th percentile that holds its
    peak.

    The paper's box (ProtoPNet's ``find_high_activation_crop``) bounds *all* those pixels; when they
    fall in two places, say a spot on the image border and one on the mass, that box spans both and
    points at neither (chapter 8). Where the top pixels form one region the two boxes are the same.

    pam (m, S, S) -> (m, 4) int64 ``[y0, x0, y1, x1]``, end-exclusive
    """
    from scipy import ndimage

    from .metrics import top_pixels

    m = pam.shape[0]
    hot = top_pixels(pam, percentile / 100.0)                                 # (m, S, S) bool
    peak = pam.flatten(1).float().argmax(dim=1).cpu().numpy()                 # (m,) flat index
    out = np.zeros((m, 4), dtype=np.int64)
    eight = np.ones((3, 3), dtype=bool)
    for j in range(m):
        labels, _ = ndimage.label(hot[j], structure=eight)                   # (S, S) int
        ys, xs = np.nonzero(labels == labels.flat[peak[j]])
        out[j] = (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)
    return torch.as_tensor(out, device=pam.device)


# ---------------------------------------------------------------------------------------------
# The projection
# ---------------------------------------------------------------------------------------------


@dataclass
class NearestPatches:
    """Result of the class-restricted arg-min (m prototypes)."""

    sq_distance: Tensor   # (m,) float32
    image: Tensor         # (m,) int64 index into the searched images
    patch: Tensor         # (m,) int64 flat index row * W + col into the latent grid
    vector: Tensor        # (m, C) the latent patch itself
    grid: tuple[int, int]  # (H, W)


@torch.no_grad()
def patch_mask_from(masks: Tensor, grid: tuple[int, int], threshold: float = 0.5) -> Tensor:
    """Which latent-grid cells lie inside a region: the fraction of each cell's pixels inside the
    mask (area average over the cell), at least ``threshold``; an image whose region covers no cell
    that much keeps its single best-covered cell. masks (N, 1, S, S) {0, 1} -> (N, H, W) bool"""
    frac = torch.nn.functional.adaptive_avg_pool2d(masks.float(), grid)[:, 0]       # (N, H, W)
    keep = frac >= threshold
    best = frac.flatten(1).argmax(dim=1)                                             # (N,)
    empty = ~keep.flatten(1).any(dim=1) & (frac.flatten(1).max(dim=1).values > 0)
    flat = keep.flatten(1).clone()
    flat[empty, best[empty]] = True
    return flat.view_as(keep)


def nearest_patches(model: IAIABL, images: Tensor, labels: Tensor, batch_size: int = 256,
                    autocast: torch.dtype | None = None, patch_mask: Tensor | None = None,
                    distinct: bool = False) -> NearestPatches:
    """For each prototype, its nearest latent patch among the images of its own class (and, with
    ``patch_mask`` (N, H, W) bool, among the cells it allows: the push set of ``train.push_set``).

    images (N, 3, S, S), labels (N,) -> NearestPatches. One matrix product per chunk of images;
    the running minimum is kept on the device (no host synchronisation inside the loop).

    ``distinct`` (``train.push_distinct = "image"``): no two prototypes are projected onto the
    same training image. A departure from the paper, after PixPNet's ``duplicate_filter="sample"``
    (Carmichael et al., WACV 2024), made exact over the whole training set rather than per batch:
    each prototype keeps its best patch in each of its m nearest images (one of them is free
    whatever the others take), then the pairs are assigned greedily in order of distance, the
    nearest first, each assignment taking its image off the table. Without it, prototypes that
    training has drawn together land on one patch and pruning merges them (``prune``). A class
    with fewer images than prototypes reuses images once its own are used up.

    ``autocast`` (bf16/fp16, the GPU fast path): the search runs the network in that precision
    (channels_last), then the winners' images, at most m of them, go through it again in fp32, so
    that each returned ``vector`` is exactly the fp32 latent patch of the returned (image, patch)
    and ``sq_distance`` its fp32 distance. Only near-ties (within the low precision's rounding) can
    pick a different patch than an fp32 search would; the pick is a real training patch either way.
    """
    protos = model.prototypes.detach().float()                                # (m, C)
    pclass = model.prototype_class                                            # (m,)
    m, c = protos.shape
    dev = protos.device
    best_d = torch.full((m,), float("inf"), device=dev)
    best_img = torch.zeros(m, dtype=torch.long, device=dev)
    best_patch = torch.zeros(m, dtype=torch.long, device=dev)
    best_vec = protos.clone()
    cand_d = torch.full((m, 0), float("inf"), device=dev)                    # (m, ≤m) distinct mode
    cand_img = torch.zeros((m, 0), dtype=torch.long, device=dev)
    cand_patch = torch.zeros((m, 0), dtype=torch.long, device=dev)
    grid = (0, 0)
    for s in range(0, images.shape[0], batch_size):
        x = images[s:s + batch_size].to(dev, non_blocking=True)
        if autocast is not None:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=autocast) if autocast is not None else nullcontext():
            z = model.features(x)
        z = z.float()                                                         # (b, C, H, W)
        b, _, h, w = z.shape
        grid = (h, w)
        d = squared_distances(z, protos)                                      # (b, m, H, W)
        own = labels[s:s + batch_size].to(dev)[:, None] == pclass[None, :]   # (b, m)
        d = d.masked_fill(~own[:, :, None, None], float("inf"))
        if patch_mask is not None:                                            # (b, 1, H, W)
            d = d.masked_fill(~patch_mask[s:s + batch_size].to(dev)[:, None], float("inf"))
        if distinct:   # each prototype's best patch per image, merged into its m best images
            per_img, per_patch = d.flatten(2).min(dim=2)                      # (b, m)
            cand_d = torch.cat([cand_d, per_img.t()], dim=1)                  # (m, k + b)
            cand_img = torch.cat([cand_img, s + torch.arange(b, device=dev).expand(m, b)], dim=1)
            cand_patch = torch.cat([cand_patch, per_patch.t()], dim=1)
            keep = cand_d.topk(min(m, cand_d.shape[1]), dim=1, largest=False).indices  # (m, ≤m)
            cand_d, cand_img, cand_patch = (t.gather(1, keep) for t in (cand_d, cand_img, cand_patch))
        d = d.permute(1, 0, 2, 3).reshape(m, b * h * w)                      # (m, b·HW)
        dmin, arg = d.min(dim=1)                                              # (m,)
        vec = z.permute(0, 2, 3, 1).reshape(b * h * w, c)[arg]                # (m, C)
        better = dmin < best_d
        best_d = torch.where(better, dmin, best_d)
        best_img = torch.where(better, s + arg // (h * w), best_img)
        best_patch = torch.where(better, arg % (h * w), best_patch)
        best_vec = torch.where(better[:, None], vec, best_vec)
    missing = torch.isinf(best_d)
    if bool(missing.any()):
        absent = sorted({MARGINS[int(k)] for k in pclass[missing].tolist()})
        raise InputError(f"push: the training set has no image of class {', '.join(absent)}; "
                         "every class needs training examples to project its prototypes onto")
    if distinct:
        best_d, best_img, best_patch = _assign_distinct(cand_d, cand_img, cand_patch, best_d, best_img, best_patch)
    if autocast is not None or distinct:   # the winners again, in fp32
        uniq, pos = torch.unique(best_img, return_inverse=True)              # (u,), (m,)
        z = model.features(images[uniq.to(images.device)].to(dev).contiguous()).float()  # (u, C, H, W)
        z = z.flatten(2)                                                      # (u, C, HW)
        best_vec = z[pos, :, best_patch]                                      # (m, C)
        best_d = ((best_vec - protos) ** 2).sum(dim=1)                        # (m,)
    return NearestPatches(best_d, best_img, best_patch, best_vec, grid)


def _assign_distinct(cand_d: Tensor, cand_img: Tensor, cand_patch: Tensor,
                     best_d: Tensor, best_img: Tensor, best_patch: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Greedy assignment of prototypes to distinct images, nearest pair first (``nearest_patches``).

    cand_* (m, k): each prototype's k ≤ m nearest images (distance, image, patch), inf where none;
    best_* (m,): each prototype's unconstrained nearest patch, the fallback for a prototype whose
    candidate images are all taken (its class has fewer images than prototypes)."""
    d = cand_d.detach().cpu().double().clone()                              # (m, k)
    img, patch = cand_img.cpu(), cand_patch.cpu()
    out_d, out_img, out_patch = best_d.cpu().clone(), best_img.cpu().clone(), best_patch.cpu().clone()
    for _ in range(d.shape[0]):                                               # one prototype per round
        j, k = divmod(int(d.argmin()), d.shape[1])
        if not torch.isfinite(d[j, k]):
            break                                                             # fallback for the rest
        out_d[j], out_img[j], out_patch[j] = cand_d[j, k].cpu(), img[j, k], patch[j, k]
        d[j] = float("inf")                                                   # the prototype is placed
        d[img == img[j, k]] = float("inf")                                    # the image is taken
    dev = best_d.device
    return out_d.to(dev), out_img.to(dev), out_patch.to(dev)


def push_cells(push_set: str, lesion_masks: Tensor, grid: int) -> Tensor | None:
    """The cells a prototype may be projected onto (``train.push_set``): every cell of its class's
    training images ("all", the paper: None), or only the cells inside the lesion ("lesion",
    ``patch_mask_from``). lesion_masks (N, 1, S, S) -> (N, grid, grid) bool or None."""
    if push_set == "all":
        return None
    if push_set != "lesion":
        raise InputError(f"train.push_set must be 'all' or 'lesion', got {push_set!r}")
    return patch_mask_from(lesion_masks, (grid, grid))


def push_diagnostics(records: list[dict], arrays: dict, train_index: np.ndarray, lesion_masks: Tensor) -> dict:
    """How many distinct training patches the prototypes sit on, and how much of their
    self-activation lies on the lesion of their source image (Eq. 9; history.csv's push rows).
    train_index (N,): the dataset rows of the training images whose lesion_masks (N, 1, S, S) are given."""
    from .metrics import activation_precision

    distinct = len({(r["source_index"], *r["patch"]) for r in records})
    rows = torch.as_tensor(np.searchsorted(train_index, arrays["source_index"]))
    masks = lesion_masks[rows.to(lesion_masks.device), 0].cpu().numpy()
    ap = activation_precision(arrays["self_activation"], masks)
    return {"distinct_prototypes": distinct, "push_lesion_ap": float(np.mean(ap))}


def grey_uint8(images: Tensor) -> np.ndarray:
    """ImageNet-normalised (n, 3, S, S) -> the grey ROI (n, S, S) uint8 (channel 0 un-normalised)."""
    g = images[:, 0].float() * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    return (g.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


@dataclass
class PushResult:
    records: list[dict]            # one per prototype, JSON-ready (push.json)
    arrays: dict[str, np.ndarray]  # self_activation (m,S,S) float32, source_image (m,S,S) uint8, ...


@torch.no_grad()
def push_prototypes(
    model: IAIABL,
    images: Tensor,
    labels: Tensor,
    ids: list[str] | None = None,
    source_index: np.ndarray | None = None,
    batch_size: int = 256,
    epoch: int | None = None,
    autocast: torch.dtype | None = None,
    patch_mask: Tensor | None = None,
    distinct: bool = False,
) -> PushResult:
    """Stage A2: project every prototype onto its nearest same-class training patch (in place) and
    record where it came from (see the module docstring).

    images (N, 3, S, S) un-augmented, ImageNet-normalised training images; labels (N,);
    ids: their manifest ids; source_index (N,): their row numbers in the prepared dataset
    (default 0..N-1); autocast: the search's precision on the fast path (``nearest_patches``);
    patch_mask, distinct: the cells allowed and one image per prototype (``nearest_patches``).
    """
    was_training = model.training
    model.eval()
    try:
        near = nearest_patches(model, images, labels, batch_size, autocast, patch_mask, distinct)
        model.prototypes.data.copy_(near.vector.to(model.prototypes.dtype))
        m = model.num_prototypes
        s = images.shape[-1]
        h, w = near.grid
        # self-activation: each prototype's similarity map on its own source image
        src = images[near.image.to(images.device)].to(model.prototypes.device)  # (m, 3, S, S)
        maps = model(src).similarity_maps                                     # (m, m, H, W)
        own = maps[torch.arange(m), torch.arange(m)]                          # (m, H, W)
        pam = activation_map(own[:, None], s)[:, 0]                           # (m, S, S)
        hot = high_activation_box(pam).cpu().numpy()
    finally:
        model.train(was_training)

    rf = receptive_field(nn.Sequential(model.backbone, model.add_on))
    img = near.image.cpu().numpy()
    patch = near.patch.cpu().numpy()
    rows, cols = patch // w, patch % w
    sq = near.sq_distance.cpu().numpy()
    pclass = model.prototype_class.cpu().numpy()
    index = np.arange(images.shape[0]) if source_index is None else np.asarray(source_index)
    records = []
    for j in range(m):
        rec = {
            "prototype": j,
            "class": int(pclass[j]),
            "class_name": MARGINS[int(pclass[j])],
            "source_index": int(index[img[j]]),
            "source_id": ids[img[j]] if ids is not None else str(int(index[img[j]])),
            "patch": [int(rows[j]), int(cols[j])],
            "rf_box": rf_box(rf, int(rows[j]), int(cols[j]), s),
            "high_activation_box": [int(v) for v in hot[j]],
            "sq_distance": float(sq[j]),
        }
        if epoch is not None:
            rec["epoch"] = int(epoch)
        records.append(rec)
    arrays = {
        "self_activation": pam.float().cpu().numpy(),                         # (m, S, S)
        "source_image": grey_uint8(src),                                      # (m, S, S)
        "prototype_class": pclass.astype(np.int64),
        "source_index": np.array([r["source_index"] for r in records], dtype=np.int64),
        "patch": np.stack([rows, cols], axis=1).astype(np.int64),              # (m, 2)
        "rf_box": np.array([r["rf_box"] for r in records], dtype=np.int64),   # (m, 4)
        "high_activation_box": hot.astype(np.int64),                          # (m, 4)
        "sq_distance": sq.astype(np.float32),
    }
    return PushResult(records, arrays)


def select(result_records: list[dict], arrays: dict[str, np.ndarray], keep: list[int]) -> tuple[list[dict], dict]:
    """The push records/arrays of the prototypes ``keep`` (after pruning), renumbered 0..len-1."""
    records = []
    for new, old in enumerate(keep):
        rec = dict(result_records[old])
        rec["original_prototype"] = rec.get("original_prototype", rec["prototype"])
        rec["prototype"] = new
        records.append(rec)
    return records, {k: v[keep] for k, v in arrays.items()}
